"""The hands-free service: the daemon wiring microphone to speaker, and its turn logic.

turns is the state machine (drive it with fake events in tests), wake_phrase matches the wake
phrase and yes/no answers in text, notify speaks sd_notify to systemd.
"""
