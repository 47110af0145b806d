"""Generated camera, microphone and speaker for the development stack's agents: no camera or sound
card needed for a call.

FOR DEVELOPMENT, THE DEMO AND TESTS ONLY.

Public API: ``GeneratedDevices`` (``camera``, ``microphone``, ``speaker``: what the agent's settings
name; ``environment``: what its media child's process needs, ALSA's configuration);
``write_devices(directory) -> GeneratedDevices``: a test-pattern video (looped) as the camera and a
tone as the microphone on ALSA file devices, and a speaker that plays into nothing. Blocking
(numpy, OpenCV, files): not on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GeneratedDevices:
    camera: str
    microphone: str
    speaker: str
    environment: dict[str, str]

    def settings(self) -> dict[str, str]:
        """As an agent's settings: the devices, then the environment its media child reads."""
        return {
            "TELEHEALTH_CAMERA": self.camera,
            "TELEHEALTH_MICROPHONE": self.microphone,
            "TELEHEALTH_SPEAKER": self.speaker,
            **self.environment,
        }


def write_devices(directory: Path) -> GeneratedDevices:
    from devices import synthetic  # numpy and OpenCV: only when devices are made

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Small and short (it loops; the ALSA file plugin replays its end): made in a fraction of a second.
    video = synthetic.write_video(directory / "camera.mkv", "normal", frames=30, width=320, height=240)
    tone = synthetic.write_pcm(directory / "microphone.raw", "tone", seconds=10.0)
    alsa = synthetic.write_alsa_config(directory / "alsa", tone, loopback=False)
    assert alsa.microphone is not None and alsa.speaker is not None  # both were asked for
    return GeneratedDevices(str(video), alsa.microphone, alsa.speaker, alsa.env)
