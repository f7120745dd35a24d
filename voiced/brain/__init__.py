"""The assistant: gpt-oss through Ollama, and the tools it may call under its policy.

It reads text and writes text; it may use speech (to transcribe or speak files for a tool) but
never opens the microphone or speaker.
"""
