"""The reference MTCNN's detection settings: the defaults of the detector and of every entry point.

Plain Python (no torch), so that commands and option classes can import them cheaply.
"""

# Smallest face side to look for, in pixels of the input image.
MIN_FACE_SIZE = 20.0
# Face probability thresholds of P-Net, R-Net and O-Net.
THRESHOLDS = (0.6, 0.7, 0.7)
# Ratio between successive pyramid levels: about 1/sqrt(2), so each level has half the area of the last.
SCALE_FACTOR = 0.709
