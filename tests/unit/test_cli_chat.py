"""`pychat-wasm chat`: the scriptable one-shot answer (golden greedy text of transformers and llama.cpp), stop
strings, the interactive loop in a pseudo-terminal (answer + speed line, Ctrl-C stops an answer, /exit and
Ctrl-D quit), and clean errors for bad model files and option values (the page's messages for the same values)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from pychat_wasm.cli import chat as cli_chat
from pychat_wasm.cli.main import build_parser
from pychat_wasm.errors import InvalidSettingsError
from pychat_wasm.chat.sampler import SamplingSettings, settings_from_mapping
from pychat_wasm.chat.stop_strings import stop_strings_from_values

from texts import GOLDEN_ANSWER, GOLDEN_QUESTION

REPO = Path(__file__).resolve().parents[2]
CHAT = [sys.executable, "-m", "pychat_wasm.cli", "chat"]


def run_chat(*args: str, env_model: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYCHAT_WASM_MODEL=env_model)
    return subprocess.run(CHAT + list(args), cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)


def test_defaults_come_from_sampling_settings():
    args = build_parser().parse_args(["chat"])
    settings = cli_chat.settings_from_args(args)
    assert settings == SamplingSettings()
    assert args.policy == "auto" and args.prompt is None and args.context is None
    assert args.speculative is True  # prompt-lookup speculation is on unless --no-speculative
    assert build_parser().parse_args(["chat", "--no-speculative"]).speculative is False


@pytest.mark.parametrize("switch", ["--speculative", "--no-speculative"])
def test_one_shot_greedy_answer_is_the_same_with_and_without_speculation(smollm2_path, switch):
    result = run_chat(str(smollm2_path), "--prompt", GOLDEN_QUESTION, "--temperature", "0", "--context", "256",
                      switch)
    assert result.returncode == 0, result.stderr
    assert result.stdout == GOLDEN_ANSWER + "\n"


def test_one_shot_greedy_prints_only_the_answer(smollm2_path):
    result = run_chat(str(smollm2_path), "--prompt", GOLDEN_QUESTION, "--temperature", "0", "--context", "256")
    assert result.returncode == 0, result.stderr
    assert result.stdout == GOLDEN_ANSWER + "\n"
    assert "tok/s" in result.stderr and "42 prompt tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_shot_uses_the_default_model_and_honours_max_tokens(smollm2_path):
    result = run_chat("--prompt", GOLDEN_QUESTION, "--temperature", "0", "-n", "3", "--policy", "int8",
                      "--context", "128", env_model=str(smollm2_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The capital of\n"


@pytest.mark.parametrize("contents,message", [
    (None, "model file not found"),
    (b"<html>not a model</html>" * 10, "GGUF"),
])
def test_bad_model_file_fails_cleanly(tmp_path, contents, message):
    path = tmp_path / "model.gguf"
    if contents is not None:
        path.write_bytes(contents)
    result = run_chat(str(path), "--prompt", "hi")
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_stop_strings_cut_the_greedy_answer(smollm2_path):
    greedy = [str(smollm2_path), "--prompt", GOLDEN_QUESTION, "--temperature", "0", "--context", "256"]
    whole = run_chat(*greedy)
    assert whole.returncode == 0 and whole.stdout == GOLDEN_ANSWER + "\n", whole.stderr
    cut = run_chat(*greedy, "--stop", "Paris", "--stop", " of")  # the earlier of the two ends the answer
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == GOLDEN_ANSWER[:GOLDEN_ANSWER.index(" of")] + "\n" == "The capital\n"


def refusal(check, value):
    with pytest.raises(InvalidSettingsError) as raised:
        check(value)
    return str(raised.value)


@pytest.mark.parametrize("option, message", [
    (["--max-tokens", "0"], refusal(settings_from_mapping, {"max_tokens": 0})),
    (["--top-p", "0"], refusal(settings_from_mapping, {"top_p": 0.0})),
    (["--temperature", "nan"], refusal(settings_from_mapping, {"temperature": float("nan")})),
    (["--seed", "-1"], refusal(settings_from_mapping, {"seed": -1})),
    (["--stop", "User:", "--stop", ""], refusal(stop_strings_from_values, ["User:", ""])),
])
def test_sampling_values_out_of_range_exit_2_with_the_pages_message(smollm2_path, option, message):
    result = run_chat(str(smollm2_path), "--prompt", GOLDEN_QUESTION, *option)
    assert (result.returncode, result.stderr, result.stdout) == (2, "error: %s\n" % message, "")


def test_max_tokens_message_names_the_setting():
    message = refusal(settings_from_mapping, {"max_tokens": 0})
    assert message == "max tokens must be a whole number of at least 1, not 0"


@pytest.mark.parametrize("option,message", [
    (["--context", "100000"], "context_length must be between 1 and the model's 8192 tokens, not 100000"),
    (["--context", "0"], "context_length must be between 1 and the model's 8192 tokens, not 0"),
    (["--context", "40"], "the message is too long"),
])
def test_bad_context_values_fail_cleanly(smollm2_path, option, message):
    result = run_chat(str(smollm2_path), "--prompt", GOLDEN_QUESTION, *option)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_help_explains_greedy_and_the_repeat_penalty(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no wrapping inside the phrases
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chat", "--help"])
    help_lines = capsys.readouterr().out.splitlines()
    temperature = next(line for line in help_lines if line.strip().startswith("--temperature"))
    penalty = next(line for line in help_lines if line.strip().startswith("--repeat-penalty"))
    assert "0 = greedy (the same answer every time); the repeat penalty still applies: --repeat-penalty 1 turns " \
           "it off" in temperature
    assert "1 = off" in penalty
    assert any(line.strip().startswith("--stop TEXT") for line in help_lines)


# ---- interactive, in a pseudo-terminal ----------------------------------------------------------------------


def spawn_chat(model: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "pychat_wasm.cli", "chat", str(model), "--context", "256"]
                          + list(args), cwd=str(REPO), encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect_exact("> ")
    return child


def test_interactive_answer_speed_line_ctrl_c_and_exit(smollm2_path):
    child = spawn_chat(smollm2_path, "--temperature", "0")
    try:
        child.sendline(GOLDEN_QUESTION)
        child.expect_exact(GOLDEN_ANSWER)
        child.expect(r"\[42 prompt tokens, [\d.]+ tok/s \| 8 tokens, [\d.]+ tok/s\]")
        child.expect_exact("[context: 50/256 tokens (system ")  # the golden prompt's 42 tokens + the 8 generated
        child.expect_exact("> ")

        child.sendline("/help")
        child.expect_exact("/reset")
        child.expect_exact("/context")
        child.expect_exact("> ")
        child.sendline("/context")
        child.expect_exact("[context: 50/256 tokens")
        child.expect_exact("> ")

        request = "Write a very long story about a dragon who learns to bake bread."
        child.sendline(request)
        child.expect_exact(request + "\r\n")  # the terminal's echo of the typed line
        child.expect(r"\w+ \w+ \w+")  # the answer is being written
        child.sendintr()  # Ctrl-C stops the answer, not the program
        child.expect(r"\| [1-9]\d* tokens, [\d.]+ tok/s \(stopped\)\]")
        child.expect_exact("> ")

        child.sendline("/reset")
        child.expect_exact("[new conversation]")
        child.expect_exact("> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_context_status_warns_and_counts_dropped_messages(smollm2_path):
    """With a 96-token context, long messages fill it: the status line warns, then reports the dropped ones."""
    child = pexpect.spawn(sys.executable, ["-m", "pychat_wasm.cli", "chat", str(smollm2_path), "--context", "96",
                                           "-n", "4", "--temperature", "0", "--system", "Be brief."],
                          cwd=str(REPO), encoding="utf-8", timeout=120, dimensions=(40, 200))
    try:
        child.expect_exact("> ")
        seen = []
        for i in range(4):
            child.sendline("Message %d. Remember: apple, river, mountain, candle, violin." % i)
            child.expect(r"\[context: (\d+)/96 tokens \(system \d+, history \d+, answer [1-4]\)([^\]]*)\]")
            seen.append((int(child.match.group(1)), child.match.group(2)))
            child.expect_exact("> ")
        assert any("the next message will drop the oldest turns" in extra for _, extra in seen)
        assert "oldest messages dropped" in seen[-1][1] and all(used <= 96 for used, _ in seen)
        child.sendline("/context")
        child.expect_exact("[context: %d/96 tokens" % seen[-1][0])
        child.expect_exact("> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()


@pytest.mark.parametrize("key", ["ctrl-d", "ctrl-c"])
def test_ctrl_d_or_ctrl_c_at_the_prompt_exits_cleanly(smollm2_path, key):
    child = spawn_chat(smollm2_path)
    try:
        if key == "ctrl-d":
            child.sendeof()
            child.expect(pexpect.EOF)
        else:
            # CPython's readline loses a SIGINT that lands between printing the prompt and waiting for
            # input (a person just presses Ctrl-C again): so does the test, a bounded number of times.
            for _ in range(6):  # 10 s each: a busy CI machine is slow to deliver and act on the signal
                child.sendintr()
                if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=10) == 0:
                    break
            else:
                pytest.fail("Ctrl-C at the prompt did not end the chat")
        assert "Traceback" not in child.before
    finally:
        child.close()
    assert child.exitstatus == 0
