"""Tools for choosing settings: evaluation against annotations, pyramid planning and calibration, drawing."""
