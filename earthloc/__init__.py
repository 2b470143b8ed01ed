"""earthloc: find where on Earth an astronaut photo was taken (EarthLoc, CVPR 2024, as a tool)."""

__version__ = "0.1.0"
