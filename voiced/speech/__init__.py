"""Audio to words and words to audio: Whisper (stt) and Piper (tts) and what serves them.

The model store and ggml conversion feed stt; formats write its transcripts; sentences and the
speaker turn a streamed reply into audio for :mod:`voiced.audio.playback`.
"""
