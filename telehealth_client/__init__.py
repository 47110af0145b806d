"""Headless telehealth agent for hospital check-in kiosks and exam-room carts."""

__version__ = "0.1.0"

__all__ = ["__version__"]
