// Face boxes over the photo, placed in percent of the photo so they follow any screen width.
for (const box of document.querySelectorAll("#photo-view .box")) {
  const [x0, y0, x1, y1] = box.dataset.box.split(",").map(Number);
  const [width, height] = box.dataset.size.split(",").map(Number);
  if (!width || !height) continue;
  box.style.left = `${(100 * x0) / width}%`;
  box.style.top = `${(100 * y0) / height}%`;
  box.style.width = `${(100 * (x1 - x0)) / width}%`;
  box.style.height = `${(100 * (y1 - y0)) / height}%`;
}
