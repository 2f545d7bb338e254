"""SpineDART: CT-free vertebroplasty planning from two calibrated X-rays.

The library is pure Python (numpy, torch); only :mod:`SpineDARTLib.mrml` imports ``slicer``.
"""

__version__ = "0.1.0"
