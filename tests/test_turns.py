"""The turn state machine, driven by events on a made-up clock (no audio, no models)."""

from __future__ import annotations

import math

from voiced.config import WakeSettings
from voiced.service.turns import (
    ACKNOWLEDGED_WINDOW_S,
    Acknowledge,
    Answer,
    Ask,
    ConfirmationRequested,
    Heard,
    Ignore,
    Interrupt,
    PlaybackFinished,
    PlaybackStarted,
    StartTurn,
    State,
    Tick,
    TurnFinished,
    TurnMachine,
    WakeWordDetected,
)

FOLLOW_UP = 8.0
TAIL = 0.5


def machine(**overrides) -> TurnMachine:
    settings = {
        "engine": "text",
        "follow_up_s": FOLLOW_UP,
        "echo_tail_s": TAIL,
        "confirm_timeout_s": 5.0,
    }
    settings.update(overrides)
    return TurnMachine(WakeSettings(**settings))


def heard(text: str, start: float, duration: float = 1.5, stt_s: float = 0.9) -> Heard:
    end = start + duration
    return Heard(text=text, start=start, end=end, at=end + 0.7 + stt_s)


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def start_turn(m: TurnMachine, text: str, at: float) -> StartTurn:
    (action,) = m.handle(heard(text, at))
    assert isinstance(action, StartTurn), action
    return action


def speak_reply(m: TurnMachine, turn: StartTurn, start: float, end: float, *texts: str) -> None:
    """The reply plays from start to end, then the turn finishes."""
    for index, text in enumerate(texts or ("A reply.",)):
        assert m.handle(PlaybackStarted(start + index * 0.01, text)) == []
    assert m.state is State.SPEAKING
    m.handle(PlaybackFinished(end))
    m.handle(TurnFinished(turn.turn_id, end + 0.01))


# ------------------------------------------------------------------------- wake phrase


def test_without_wake_phrase_nothing_happens() -> None:
    m = machine()
    (action,) = m.handle(heard("What time is it?", 10.0))
    assert isinstance(action, Ignore) and action.reason == "no_wake_phrase"
    assert m.state is State.IDLE and m.active_turn is None


def test_wake_phrase_starts_a_turn_with_the_phrase_stripped() -> None:
    m = machine()
    action = start_turn(m, "Hey, computer. What time is it?", 10.0)
    assert action.text == "What time is it?"
    assert m.state is State.THINKING and m.active_turn == action.turn_id


def test_wake_phrase_alone_is_acknowledged_and_opens_the_next_utterance() -> None:
    m = machine()
    (ack,) = m.handle(heard("Computer.", 10.0, duration=0.6))
    assert isinstance(ack, Acknowledge) and ack.text == "Yes?"
    assert m.state is State.LISTENING
    m.handle(PlaybackStarted(12.3, "Yes?"))
    m.handle(PlaybackFinished(12.8))
    action = start_turn(m, "How much disk space is left?", 13.5)
    assert action.text == "How much disk space is left?"


def test_acknowledged_window_closes() -> None:
    m = machine()
    m.handle(heard("Computer.", 10.0, duration=0.6))
    m.handle(PlaybackStarted(12.3, "Yes?"))
    m.handle(PlaybackFinished(12.8))
    m.handle(Tick(12.8 + FOLLOW_UP - 0.1))
    assert m.state is State.LISTENING
    m.handle(Tick(12.8 + FOLLOW_UP + 0.1))
    assert m.state is State.IDLE
    (action,) = m.handle(heard("How much disk space is left?", 12.8 + FOLLOW_UP + 1))
    assert isinstance(action, Ignore) and action.reason == "no_wake_phrase"


def test_empty_phrase_list_addresses_every_utterance() -> None:
    m = machine(phrases=[])
    turn = start_turn(m, "What time is it?", 10.0)
    assert turn.text == "What time is it?"
    speak_reply(m, turn, 13.0, 15.0)
    assert m.state is State.IDLE  # no window needed
    assert start_turn(m, "And the date?", 60.0).text == "And the date?"


# ------------------------------------------------------------------------- follow-up


def test_follow_up_window_accepts_speech_without_the_phrase() -> None:
    m = machine()
    turn = start_turn(m, "Computer, what time is it?", 10.0)
    speak_reply(m, turn, 13.0, 15.0, "It is ten past four.")
    assert m.state is State.LISTENING
    follow = start_turn(m, "And what is the date?", 15.0 + TAIL + 2.0)
    assert follow.text == "And what is the date?"


def test_follow_up_window_counts_from_the_start_of_speech() -> None:
    m = machine()
    turn = start_turn(m, "Computer, what time is it?", 10.0)
    speak_reply(m, turn, 13.0, 15.0)
    # Began just inside the window; transcribed after it closed.
    late_transcript = heard("And the date?", 15.0 + FOLLOW_UP - 0.2, duration=2.0)
    assert late_transcript.at > 15.0 + FOLLOW_UP
    m.handle(Tick(late_transcript.at - 0.05))
    assert m.state is State.IDLE
    (action,) = m.handle(late_transcript)
    assert isinstance(action, StartTurn)


def test_follow_up_window_expires() -> None:
    m = machine()
    turn = start_turn(m, "Computer, what time is it?", 10.0)
    speak_reply(m, turn, 13.0, 15.0)
    m.handle(Tick(15.0 + FOLLOW_UP - 1))
    assert m.state is State.LISTENING
    m.handle(Tick(15.0 + FOLLOW_UP + 0.5))
    assert m.state is State.IDLE
    (action,) = m.handle(heard("And the date?", 15.0 + FOLLOW_UP + 1))
    assert isinstance(action, Ignore) and action.reason == "no_wake_phrase"


def test_window_counts_from_the_end_of_playback() -> None:
    m = machine()
    turn = start_turn(m, "Computer, tell me a story.", 10.0)
    m.handle(PlaybackStarted(13.0, "Once upon a time."))
    # The turn reports done while the last sentence is still leaving the speaker.
    m.handle(TurnFinished(turn.turn_id, 14.0))
    m.handle(Tick(14.0 + FOLLOW_UP + 1))
    assert m.state is State.LISTENING  # still playing: the window cannot close
    m.handle(PlaybackFinished(30.0))
    m.handle(Tick(30.0 + FOLLOW_UP - 0.5))
    assert m.state is State.LISTENING
    assert isinstance(m.handle(heard("Go on.", 30.0 + FOLLOW_UP - 1))[0], StartTurn)


def test_zero_follow_up_means_the_phrase_every_time() -> None:
    m = machine(follow_up_s=0.0)
    turn = start_turn(m, "Computer, what time is it?", 10.0)
    speak_reply(m, turn, 13.0, 15.0)
    assert m.state is State.IDLE
    (action,) = m.handle(heard("And the date?", 16.0))
    assert isinstance(action, Ignore)


# ------------------------------------------------------------------------- own voice


def test_speech_during_playback_without_the_phrase_is_not_a_turn() -> None:
    m = machine()
    turn = start_turn(m, "Computer, what time is it?", 10.0)
    m.handle(PlaybackStarted(13.0, "It is ten past four in the afternoon."))
    # The microphone hears the speaker (no echo cancellation): not the same words exactly.
    (action,) = m.handle(heard("ten past four in the", 13.1))
    assert isinstance(action, Ignore) and action.reason == "during_playback"
    # Even with the follow-up window open, the tail after playback is not a user turn.
    m.handle(PlaybackFinished(16.0))
    m.handle(TurnFinished(turn.turn_id, 16.0))
    (action,) = m.handle(heard("afternoon", 16.0 + TAIL - 0.2, duration=0.4))
    assert isinstance(action, Ignore) and action.reason == "during_playback"
    assert m.active_turn is None


def test_echo_of_the_reply_is_dropped_even_after_the_tail() -> None:
    m = machine()
    turn = start_turn(m, "Computer, what is the capital of France?", 10.0)
    speak_reply(m, turn, 13.0, 15.0, "The capital of France is Paris.")
    # A late echo (room reverb, a slow loopback) arrives after the tail, in the window.
    (action,) = m.handle(heard("The capital of France is Paris.", 15.0 + TAIL + 0.3))
    assert isinstance(action, Ignore) and action.reason == "echo"
    # The user's own follow-up in the window still works.
    assert isinstance(m.handle(heard("And of Germany?", 20.0))[0], StartTurn)


def test_reply_starting_with_the_wake_phrase_does_not_trigger_itself() -> None:
    m = machine()
    turn = start_turn(m, "Computer, what are you?", 10.0)
    m.handle(PlaybackStarted(13.0, "Computer is what you call me, and I run on this desktop."))
    (action,) = m.handle(heard("Computer is what you call me and I run on this desktop", 13.05))
    assert isinstance(action, Ignore) and action.reason == "echo"
    assert m.active_turn == turn.turn_id


# ------------------------------------------------------------------------- barge-in


def test_barge_in_with_the_wake_phrase_interrupts_and_starts_a_new_turn() -> None:
    m = machine()
    first = start_turn(m, "Computer, tell me a long story.", 10.0)
    m.handle(PlaybackStarted(13.0, "Once upon a time there was a king."))
    m.handle(PlaybackStarted(15.0, "He had three daughters."))
    actions = m.handle(heard("Computer, stop. What time is it?", 15.5))
    assert kinds(actions) == ["Interrupt", "StartTurn"]
    interrupt, second = actions
    assert isinstance(interrupt, Interrupt) and interrupt.turn_id == first.turn_id
    assert isinstance(second, StartTurn) and second.text == "Stop. What time is it?"
    assert second.turn_id != first.turn_id and m.active_turn == second.turn_id
    # The interrupted turn reports in late: it must not end the new one.
    m.handle(PlaybackFinished(17.6))
    m.handle(TurnFinished(first.turn_id, 17.7))
    assert m.state is State.THINKING and m.active_turn == second.turn_id
    speak_reply(m, second, 19.0, 20.0)
    assert m.state is State.LISTENING and m.active_turn is None


def test_barge_in_with_the_phrase_alone_acknowledges() -> None:
    m = machine()
    first = start_turn(m, "Computer, tell me a long story.", 10.0)
    m.handle(PlaybackStarted(13.0, "Once upon a time."))
    actions = m.handle(heard("Computer!", 14.0, duration=0.5))
    assert kinds(actions) == ["Interrupt", "Acknowledge"]
    assert actions[0].turn_id == first.turn_id
    assert m.state is State.LISTENING and m.active_turn is None


def test_speech_while_thinking_needs_the_phrase() -> None:
    m = machine()
    first = start_turn(m, "Computer, what is the weather?", 10.0)
    (action,) = m.handle(heard("hmm I wonder", 12.5))
    assert isinstance(action, Ignore) and action.reason == "busy"
    actions = m.handle(heard("Computer, never mind, what time is it?", 14.0))
    assert kinds(actions) == ["Interrupt", "StartTurn"]
    assert actions[0].turn_id == first.turn_id


# ------------------------------------------------------------------------- confirmation


def ask(m: TurnMachine, at: float, request_id: int = 7) -> None:
    actions = m.handle(ConfirmationRequested(request_id, "Delete notes.txt? Say yes or no.", at))
    assert actions == [Ask(request_id, "Delete notes.txt? Say yes or no.")]
    assert m.state is State.CONFIRMING
    m.handle(PlaybackStarted(at + 0.3, "Delete notes.txt? Say yes or no."))
    m.handle(PlaybackFinished(at + 2.0))


def test_confirmation_yes() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)
    (answer,) = m.handle(heard("Yes, please.", 15.5, duration=0.8))
    assert answer == Answer(7, True, "yes")
    assert m.state is State.THINKING


def test_confirmation_no_and_fuzzy_spelling() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)
    (answer,) = m.handle(heard("Nope.", 15.5, duration=0.5))
    assert answer == Answer(7, False, "no")


def test_confirmation_with_the_wake_phrase_in_front() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)
    (answer,) = m.handle(heard("Computer, yes.", 15.5, duration=0.8))
    assert answer == Answer(7, True, "yes")


def test_confirmation_times_out_to_no_counted_from_the_question_end() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)  # question heard until 15.0; timeout 5 s
    (unclear,) = m.handle(heard("Hmm, let me think.", 15.5))
    assert isinstance(unclear, Ignore) and unclear.reason == "unclear_answer"
    assert m.handle(Tick(19.9)) == []
    assert m.handle(Tick(20.1)) == [Answer(7, False, "timeout")]
    assert m.state is State.THINKING
    assert m.handle(Tick(30.0)) == []  # answered once


def test_confirmation_timeout_waits_for_the_question_to_be_spoken() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    m.handle(ConfirmationRequested(3, "Delete notes.txt?", 13.0))
    m.handle(PlaybackStarted(13.1, "Some earlier sentence of the reply that is long."))
    assert m.handle(Tick(25.0)) == []  # still speaking: no timeout yet
    m.handle(PlaybackFinished(26.0))
    assert m.handle(Tick(30.5)) == []
    assert m.handle(Tick(31.1)) == [Answer(3, False, "timeout")]


def test_confirmation_answer_during_the_question_needs_the_phrase() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    m.handle(ConfirmationRequested(7, "Delete notes.txt? Say yes or no.", 13.0))
    m.handle(PlaybackStarted(13.2, "Delete notes.txt? Say yes or no."))
    # The speaker's own "yes or no" reaches the microphone.
    (action,) = m.handle(heard("yes or no", 14.0, duration=0.6))
    assert isinstance(action, Ignore) and action.reason == "during_playback"
    assert m.state is State.CONFIRMING


def test_new_request_instead_of_an_answer_declines_and_starts_over() -> None:
    m = machine()
    first = start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)
    actions = m.handle(heard("Computer, what time is it?", 16.0))
    assert kinds(actions) == ["Answer", "Interrupt", "StartTurn"]
    assert actions[0] == Answer(7, False, "interrupted")
    assert actions[1].turn_id == first.turn_id
    assert actions[2].text == "What time is it?"


def test_turn_ending_with_a_pending_question_declines_it() -> None:
    m = machine()
    turn = start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)
    assert m.handle(TurnFinished(turn.turn_id, 16.0)) == [Answer(7, False, "turn_over")]
    assert m.state is State.LISTENING


def test_a_spoken_yes_after_the_acknowledgement_answers_the_question() -> None:
    m = machine()
    m.handle(heard("Computer.", 10.0, duration=0.6))
    m.handle(PlaybackStarted(12.3, "Yes?"))
    m.handle(PlaybackFinished(12.8))
    start_turn(m, "Delete notes.txt.", 13.5)
    ask(m, 16.0)  # the question is heard until 18.0
    (answer,) = m.handle(heard("Yes.", 19.0, duration=0.5))
    assert answer == Answer(7, True, "yes")


def test_a_spoken_no_after_a_reply_of_no_answers_the_question() -> None:
    m = machine()
    turn = start_turn(m, "Computer, is it raining?", 10.0)
    speak_reply(m, turn, 13.0, 13.5, "No.")
    start_turn(m, "Then delete umbrella.txt.", 15.0)
    ask(m, 18.0)
    (answer,) = m.handle(heard("No.", 21.0, duration=0.5))
    assert answer == Answer(7, False, "no")


def test_a_late_echo_of_the_question_is_no_answer() -> None:
    m = machine()
    start_turn(m, "Computer, delete notes.txt.", 10.0)
    ask(m, 13.0)  # "Delete notes.txt? Say yes or no." heard until 15.0
    # A slow loopback brings the question back after the tail: it reads as "yes".
    (action,) = m.handle(heard("Delete notes.txt? Say yes or no.", 15.0 + TAIL + 0.1))
    assert isinstance(action, Ignore) and action.reason == "echo"
    assert m.state is State.CONFIRMING


def test_a_short_echo_overlapping_the_tail_is_still_dropped() -> None:
    m = machine()
    m.handle(heard("Computer.", 10.0, duration=0.6))
    m.handle(PlaybackStarted(12.3, "Yes?"))
    m.handle(PlaybackFinished(12.8))
    # The acknowledgement through the microphone, ending just inside the tail.
    (action,) = m.handle(heard("Yes?", 12.4, duration=0.6))
    assert isinstance(action, Ignore) and action.reason == "during_playback"


def test_zero_follow_up_still_opens_a_window_after_the_acknowledgement() -> None:
    m = machine(follow_up_s=0.0)
    (ack,) = m.handle(heard("Computer.", 10.0, duration=0.6))
    assert isinstance(ack, Acknowledge)
    m.handle(PlaybackStarted(12.3, "Yes?"))
    m.handle(PlaybackFinished(12.8))
    m.handle(Tick(13.0))
    assert m.state is State.LISTENING
    assert start_turn(m, "What time is it?", 13.5).text == "What time is it?"
    # The acknowledged window has a floor, not an open end.
    m2 = machine(follow_up_s=0.0)
    m2.handle(heard("Computer.", 10.0, duration=0.6))
    m2.handle(PlaybackStarted(12.3, "Yes?"))
    m2.handle(PlaybackFinished(12.8))
    m2.handle(Tick(12.8 + ACKNOWLEDGED_WINDOW_S + 0.1))
    assert m2.state is State.IDLE


# ------------------------------------------------------------------------- wake-word model


def model_machine(**overrides) -> TurnMachine:
    return machine(engine="model", model="hey_jarvis", **overrides)


def woken(text: str, start: float, detected: float, model: str = "hey_jarvis", **kw) -> Heard:
    """An utterance with a detection at ``detected`` (its text: what followed the phrase)."""
    base = heard(text, start, **kw)
    return Heard(base.text, base.start, base.end, base.at, wake=model, wake_at=detected)


def model_turn(m: TurnMachine, at: float, text: str = "What time is it?") -> StartTurn:
    assert m.handle(WakeWordDetected("hey_jarvis", at + 0.8, 0.99)) == []
    (action,) = m.handle(woken(text, at, at + 0.8))
    assert isinstance(action, StartTurn), action
    return action


def test_model_engine_keeps_its_ears_shut_without_a_detection() -> None:
    m = model_machine()
    assert m.ears_open_until() == -math.inf
    (action,) = m.handle(heard("Hey computer, what time is it?", 10.0))
    assert isinstance(action, Ignore) and action.reason == "no_wake_phrase"
    assert m.state is State.IDLE and m.ears_open_until() == -math.inf
    # The text engine transcribes everything: its ears never close.
    assert machine().ears_open_until() == math.inf
    assert machine().handle(WakeWordDetected("hey_jarvis", 10.0)) == []


def test_detection_opens_the_ears_and_the_request_in_the_same_utterance_starts_a_turn() -> None:
    m = model_machine()
    assert m.handle(WakeWordDetected("hey_jarvis", 10.8, 0.99)) == []
    assert m.state is State.LISTENING
    assert m.ears_open_until() >= 10.8 + ACKNOWLEDGED_WINDOW_S
    (action,) = m.handle(woken("What time is it?", 10.0, 10.8))
    assert isinstance(action, StartTurn) and action.text == "What time is it?"
    assert m.state is State.THINKING and m.ears_open_until() == -math.inf


def test_what_is_left_of_the_phrase_in_the_text_is_stripped() -> None:
    m = model_machine()
    m.handle(WakeWordDetected("hey_jarvis", 10.8))
    (action,) = m.handle(woken("Hey Jarvis, what time is it?", 10.0, 10.8))
    assert isinstance(action, StartTurn) and action.text == "What time is it?"


def test_detection_alone_is_acknowledged_and_the_next_utterance_needs_no_wake_word() -> None:
    m = model_machine()
    m.handle(WakeWordDetected("hey_jarvis", 10.7))
    (ack,) = m.handle(woken("", 10.0, 10.7, duration=0.8))
    assert isinstance(ack, Acknowledge) and m.state is State.LISTENING
    m.handle(PlaybackStarted(12.0, "Yes?"))
    assert m.ears_open_until() == math.inf  # the acknowledgement is playing
    m.handle(PlaybackFinished(12.4))
    assert m.ears_open_until() >= 12.4 + ACKNOWLEDGED_WINDOW_S - 0.5
    (action,) = m.handle(heard("What is the weather?", 13.0))
    assert isinstance(action, StartTurn) and action.text == "What is the weather?"


def test_follow_up_window_opens_the_ears_after_a_reply_and_then_closes_them() -> None:
    m = model_machine()
    turn = model_turn(m, 10.0)
    speak_reply(m, turn, 13.0, 15.0)
    assert m.state is State.LISTENING and m.ears_open_until() == 15.01 + FOLLOW_UP
    (action,) = m.handle(heard("And tomorrow?", 16.0))
    assert isinstance(action, StartTurn)
    speak_reply(m, action, 19.0, 20.0)
    m.handle(Tick(20.0 + FOLLOW_UP + 0.1))
    assert m.state is State.IDLE and m.ears_open_until() == 20.01 + FOLLOW_UP


def test_the_wake_word_while_speaking_stops_at_once_without_a_transcript() -> None:
    m = model_machine()
    turn = model_turn(m, 10.0)
    m.handle(PlaybackStarted(13.0, "Once upon a time, a lighthouse keeper lived alone."))
    assert m.state is State.SPEAKING
    detection = WakeWordDetected("hey_jarvis", 14.5, 0.98)
    (stop,) = m.handle(detection)
    assert stop == Interrupt(turn.turn_id, None, detection)
    assert m.active_turn is None and m.state is State.LISTENING
    m.handle(PlaybackFinished(14.55))
    m.handle(TurnFinished(turn.turn_id, 14.6))  # the cancelled turn ends: nothing changes
    assert m.state is State.LISTENING
    # The utterance that carried the stop word: said alone, it is not acknowledged.
    (action,) = m.handle(woken("", 13.9, 14.5, duration=0.8))
    assert isinstance(action, Ignore) and action.reason == "stopped"


def test_the_wake_word_with_a_request_while_speaking_stops_and_starts_over() -> None:
    m = model_machine()
    turn = model_turn(m, 10.0)
    m.handle(PlaybackStarted(13.0, "It is a long story."))
    kinds_ = kinds(m.handle(WakeWordDetected("hey_jarvis", 14.5)))
    assert kinds_ == ["Interrupt"]
    (action,) = m.handle(woken("What about Paris?", 13.9, 14.5))
    assert isinstance(action, StartTurn) and action.text == "What about Paris?"
    assert action.turn_id != turn.turn_id


def test_the_stop_model_stops_a_reply_but_wakes_nothing() -> None:
    m = model_machine(stop_model="alexa")
    assert m.handle(WakeWordDetected("alexa", 5.0)) == []  # idle: not a wake word
    assert m.state is State.IDLE and m.ears_open_until() == -math.inf
    turn = model_turn(m, 10.0)
    m.handle(PlaybackStarted(13.0, "A reply that goes on."))
    (stop,) = m.handle(WakeWordDetected("alexa", 14.0))
    assert isinstance(stop, Interrupt) and stop.turn_id == turn.turn_id
    # A model that is not configured is nobody's word.
    turn = model_turn(m, 20.0)
    m.handle(PlaybackStarted(23.0, "Another reply."))
    assert m.handle(WakeWordDetected("okay_nabu", 24.0)) == []
    assert m.state is State.SPEAKING


def test_the_stop_word_while_thinking_cancels_the_turn() -> None:
    m = model_machine()
    turn = model_turn(m, 10.0)
    (stop,) = m.handle(WakeWordDetected("hey_jarvis", 12.0))
    assert isinstance(stop, Interrupt) and stop.turn_id == turn.turn_id


def test_the_stop_word_while_confirming_declines_and_stops() -> None:
    m = model_machine()
    turn = model_turn(m, 10.0)
    m.handle(ConfirmationRequested(7, "Delete notes.txt? Say yes or no.", 13.0))
    assert m.ears_open_until() == math.inf  # the answer needs no wake word
    m.handle(PlaybackStarted(13.3, "Delete notes.txt? Say yes or no."))
    actions = m.handle(WakeWordDetected("hey_jarvis", 14.0))
    assert actions[0] == Answer(7, False, "stopped")
    assert isinstance(actions[1], Interrupt) and actions[1].turn_id == turn.turn_id
    assert m.state is not State.CONFIRMING


def test_a_confirmation_is_answered_without_the_wake_word() -> None:
    m = model_machine()
    model_turn(m, 10.0, "Delete notes.txt.")
    ask(m, 13.0)
    (answer,) = m.handle(heard("Yes.", 15.5, duration=0.6))
    assert answer == Answer(7, True, "yes")
