"""The paper's settings and the project's defaults, said once; commands, recipes, the app and tests import them.

docs/method.md, "Inference" and "Training recipe": SD 1.5, 50 Euler steps at guidance 5, CurricularFace IR-101 as φ.
"""

BASE_MODEL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the paper's base model (hub id)
PAPER_STEPS = 50  # the paper's sampler steps
PAPER_GUIDANCE = 5.0  # the paper's classifier-free guidance scale
DEFAULT_IDENTITY_ENCODER = "curricularface_ir101"  # φ: the paper's face-recognition network
DEFAULT_DETECTOR = "auto"  # RetinaFace when its weights are present, else MTCNN
DETECTORS = (DEFAULT_DETECTOR, "retinaface", "mtcnn")
