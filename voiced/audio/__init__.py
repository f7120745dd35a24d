"""Sound in and out at the signal level: the microphone, the speech gate, the speaker.

capture reads the microphone; segmenter cuts utterances out of silence; playback plays audio and
stops on demand. Nothing here knows words: it imports only the foundation (config, decode).
"""
