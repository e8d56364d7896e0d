"""pocoviz: neural-recording forecasts and the theory around them, in PyTorch and a Panel app."""

__version__ = "0.1.0"
