"""FaceTracker backends: frames in, ``FaceObservation`` out."""
