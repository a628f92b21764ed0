"""The Modal deploy's answer model: with PAGELENS_MODAL_LLM_MODEL, one `modal deploy` declares vLLM's
OpenAI-compatible server beside pagelens (on a GPU, as a web server) and points `/ask` at it; without
it, no second class. Checked without contacting Modal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pagelens.deploy.modal_settings import ModalSettings
from pagelens.deploy.vllm_server import VLLM_PORT, keyed_launch, vllm_command, with_answer_server
from pagelens.settings import Settings

DECLARED = (
    "import pagelens.deploy.modal_app as m; "
    "cls = getattr(m, 'AnswerServer', None); "
    "serve = None if cls is None else cls._get_partial_functions()['serve']; "
    "print(None if cls is None else sorted(cls._get_partial_functions()), "
    "None if serve is None else serve._is_web_endpoint())"
)


def run_app_module(tmp_path, **deploy: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "PAGELENS_MODAL_"))}
    env |= {"HOME": str(tmp_path)} | {f"PAGELENS_MODAL_{name}": value for name, value in deploy.items()}
    result = subprocess.run([sys.executable, "-c", DECLARED], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_an_answer_model_adds_a_vllm_web_server_class_to_the_same_app(tmp_path):
    assert run_app_module(tmp_path) == "None None"
    declared = run_app_module(tmp_path, LLM_MODEL="Qwen/Qwen2.5-VL-7B-Instruct", LLM_GPU="A100")
    assert declared == "['serve'] True"


def test_the_vllm_command_accepts_the_pages_of_an_ask_and_keeps_the_key_off_the_command_line():
    deploy = ModalSettings(llm_model="Qwen/Qwen2.5-VL-7B-Instruct", llm_max_images=5, llm_quantization="awq")
    command = vllm_command(deploy, download_dir="/cache/hub")
    assert command[:3] == ["vllm", "serve", "Qwen/Qwen2.5-VL-7B-Instruct"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert json.loads(options["--limit-mm-per-prompt"]) == {"image": 5, "video": 0}
    assert options["--port"] == str(VLLM_PORT) and options["--download-dir"] == "/cache/hub"
    assert options["--quantization"] == "awq" and options["--served-model-name"] == deploy.llm_model
    assert "--api-key" not in options  # VLLM_API_KEY in its environment instead
    assert "--quantization" not in vllm_command(ModalSettings(llm_model="m"), download_dir="/d")


def test_the_launcher_hands_vllm_the_secrets_key_in_its_environment(tmp_path):
    probe = ["sh", "-c", 'printf "%s|%s" "$VLLM_API_KEY" "$*"', "probe", "serve", "a b"]
    for secret, expected in (({"PAGELENS_API_KEY": "k1", "SERVICE_API_KEY": "k2"}, "k1"),
                             ({"SERVICE_API_KEY": "k2"}, "k2")):  # fmt: skip
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | secret
        result = subprocess.run(keyed_launch(probe), env=env, capture_output=True, text=True, timeout=30)
        assert result.stdout == f"{expected}|serve a b", result.stderr
        assert expected not in " ".join(keyed_launch(probe))


def test_pagelens_asks_the_answer_server_with_its_own_key():
    deploy = ModalSettings(llm_model="Qwen/Qwen2.5-VL-7B-Instruct")
    settings = with_answer_server(
        Settings(model="m", api_key="secret-key"), "https://ws--pagelens-answerserver-serve.modal.run/", deploy
    )
    assert settings.llm_url == "https://ws--pagelens-answerserver-serve.modal.run/v1"
    assert settings.llm_model == "Qwen/Qwen2.5-VL-7B-Instruct" and settings.llm_api_key == "secret-key"
    assert settings.model == "m"
