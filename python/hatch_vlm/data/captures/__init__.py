"""Training data from your own posed RGB-D captures (`hatch-vlm data build`; docs/own_data.md).

    frames       CaptureFrame (OpenCV c2w, K of the depth map, depth in metres), FrameLog, depth I/O
    nerfstudio   transforms.json (OpenGL -> OpenCV axes, +0.5 pixel centres, depth_unit_scale_factor)
    scannet      SensReader exports (color/ depth/ pose/ intrinsic/)
    arkitscenes  ARKitScenes raw (lowres_wide, lowres_depth, .pincam, world-to-camera .traj)
"""
from .arkitscenes import ARKitScenesCapture
from .frames import CaptureError, CaptureFrame, FrameLog
from .nerfstudio import NerfstudioCapture
from .scannet import ScanNetCapture

READERS = {"nerfstudio": NerfstudioCapture, "scannet": ScanNetCapture, "arkitscenes": ARKitScenesCapture}

__all__ = ["ARKitScenesCapture", "CaptureError", "CaptureFrame", "FrameLog", "NerfstudioCapture",
           "ScanNetCapture", "READERS"]
