"""Audio and video: signaling on the agent\x27s side, the call itself in a child process."""
