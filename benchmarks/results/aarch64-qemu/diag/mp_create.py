"""Minimal: create FaceLandmarker (IMAGE mode, the pinned bundle), run one still, print a blendshape."""
import os, sys, time
t = time.time()
from mediapipe.tasks.python.core.base_options import BaseOptions
from mediapipe.tasks.python.vision import face_landmarker as fl
from mediapipe.tasks.python.vision.core import image as mp_image
from mediapipe.tasks.python.vision.core.vision_task_running_mode import VisionTaskRunningMode
print("imported", round(time.time() - t, 1), flush=True)
model = sys.argv[1]
delegate = os.environ.get("DELEGATE")
bo = BaseOptions(model_asset_buffer=open(model, "rb").read(),
                 delegate=BaseOptions.Delegate[delegate] if delegate else None)
opts = fl.FaceLandmarkerOptions(base_options=bo, running_mode=VisionTaskRunningMode.IMAGE, num_faces=1,
                                output_face_blendshapes=True)
lm = fl.FaceLandmarker.create_from_options(opts)
print("created", round(time.time() - t, 1), flush=True)
if len(sys.argv) > 2:
    import cv2
    img = cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB)
    r = lm.detect(mp_image.Image(image_format=mp_image.ImageFormat.SRGB, data=img))
    print("faces", len(r.face_landmarks), "lm0", r.face_landmarks[0][0] if r.face_landmarks else None,
          "bs", [(c.category_name, round(c.score, 4)) for c in r.face_blendshapes[0][:5]] if r.face_blendshapes else None,
          round(time.time() - t, 1), flush=True)
lm.close()
print("ok", flush=True)
