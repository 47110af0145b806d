"""What the tests share: the one recorder a test waits on (``recorder.py``)."""
