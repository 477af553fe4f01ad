"""Who started what on the Fine-tune page: session keys, the owner token, the one-at-a-time rule, stop buttons."""

from __future__ import annotations

import secrets
from pathlib import Path

import streamlit as st

from vitviz.finetune.pair import pair_job_by_name
from vitviz.finetune.worker import stop_run
from vitviz.progress import duration_text
from vitviz.runs import (
    RunError,
    active_runs,
    max_concurrent_runs,
    owned_by,
    read_status,
    run_folder_by_name,
)

OPEN_RUN = "finetune_open_run"  # session key: the folder name of the run shown below the form
RUN_PARAM = "run"  # query parameter with the same name, so a refresh reopens the run
RUN_PICK = "finetune_run_pick"  # the runs list's selectbox
OPEN_PAIR = "finetune_open_pair"  # session key: the pair job this session started
PAIR_PARAM = "pair"  # its query parameter, so a refresh shows the pair's progress again
OPEN_FEW_SHOT = "finetune_few_shot_job"  # session key: the few-shot job this session started
FEW_SHOT_PARAM = "fewshot"  # its query parameter, so a refresh shows the table again
MY_RUNS = "finetune_my_runs"  # session key: names of the runs this session started
OWNER_TOKEN = "finetune_owner_token"  # session key: the secret whose digest the runs it starts record
LIVE_REFRESH_S = 1.0

NOT_YOURS = (
    "Only the visitor whose session started run {name} can {action} it (the server's operator can "
    "too); a session that started a run stops owning it when its page is reloaded."
)


def session_owner() -> str:
    """This session's secret token: the runs it starts record its digest, and only it (or the
    operator, from the command line) may stop or delete them. A refresh starts a new session."""
    if OWNER_TOKEN not in st.session_state:
        st.session_state[OWNER_TOKEN] = secrets.token_urlsafe(32)
    return st.session_state[OWNER_TOKEN]


def session_runs() -> list[str]:
    if MY_RUNS not in st.session_state:
        st.session_state[MY_RUNS] = []
    return st.session_state[MY_RUNS]


def running_in_session() -> str | None:
    """What this session is training now (a run's or a pair's name), or None: one at a time per visitor."""
    for name in session_runs():
        try:
            if read_status(run_folder_by_name(name)).active:
                return f"run {name}"
        except RunError:
            continue  # deleted meanwhile
    job = st.session_state.get(OPEN_PAIR)
    if job:
        try:
            if pair_job_by_name(job).alive:
                return f"the ViT/CNN pair {job}"
        except RunError:
            pass
    return None


def start_refusal() -> str | None:
    """Why a start would be refused now (this visitor's run, or the server's cap), or None."""
    mine = running_in_session()
    if mine is not None:
        return (
            f"You are already training {mine}: one fine-tune at a time per visitor. Stop it or let it finish."
        )
    try:
        training, allowed = len(active_runs()), max_concurrent_runs()
    except RunError as error:  # the operator's setting is unreadable
        return str(error)
    if training >= allowed:
        return (
            f"The server is already training {training} of the {allowed} fine-tunes it runs at once; "
            "try again when one has finished or been stopped."
        )
    return None


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left…"
    return f"about {duration_text(seconds)} left"


def stop_button(folder: Path, label: str, key: str) -> bool:
    """A stop button for the run's owner; for anyone else, a line saying who may stop it. True once stopped."""
    if not owned_by(folder, session_owner()):
        st.caption(NOT_YOURS.format(name=folder.name, action="stop"))
        return False
    if not st.button(label, key=key, icon=":material/stop:"):
        return False
    try:
        stop_run(folder, owner=session_owner())
    except RunError as error:
        st.error(str(error))
        return False
    return True
