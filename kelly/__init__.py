__version__ = "0.0.1"


def __getattr__(name):
    "kelly's front door to emotion, `kelly.emotion_from_text` and `kelly.emotion_from_audio`, imported on first use."
    if name in ('emotion_from_text', 'emotion_from_audio'):
        from kelly.music import emotion
        return getattr(emotion, name)
    raise AttributeError(f"module 'kelly' has no attribute {name!r}")
