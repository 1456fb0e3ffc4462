// Selects marked data-autosubmit submit their form on change (filters, sort orders).
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  select.addEventListener("change", () => select.form.submit());
}
