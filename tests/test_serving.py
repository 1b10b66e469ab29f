"""`tunelab serve`: OpenAI-compatible API over one base model and its LoRA adapters (and full runs), tested
with the official `openai` client against a real server process on a free loopback port. Load and fault tests
stay on 127.0.0.1 and are bounded in requests and time."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import tunelab
from conftest import experiment

openai = pytest.importorskip("openai")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: list[str], env: dict | None = None):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"tunelab-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tunelab.cli.main", "serve", *args, "--host", HOST, "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("server did not start: " + self.output())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def request(
        self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None, timeout: float = 60
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def get(self, path: str) -> tuple[int, dict]:
        status, raw = self.request("GET", path)
        return status, (json.loads(raw) if raw.startswith(b"{") else raw)

    def post(self, path: str, obj, **kw) -> tuple[int, dict]:
        status, raw = self.request("POST", path, json.dumps(obj), **kw)
        return status, (json.loads(raw) if raw.startswith(b"{") else raw.decode())

    def client(self, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        return self.proc.returncode


def _two_runs(model_dir: Path, files, root: Path) -> list[Path]:
    runs = []
    for name, lr in (("summarize-a", 1e-2), ("summarize-b", 3e-2)):
        tree = experiment(
            model_dir,
            files,
            root,
            name=name,
            training={"max_steps": 6, "lr": lr},
            method={"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            evaluation={"max_samples": 3, "precision": "fp32", "before": False, "max_new_tokens": 12},
        )
        runs.append(tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir)
    return runs


@pytest.fixture(scope="module")
def causal(tiny_llama_chat_dir, tmp_path_factory):
    from conftest import write_dialogue_files

    root = tmp_path_factory.mktemp("serve-causal")
    files = write_dialogue_files(root / "data")
    runs = _two_runs(tiny_llama_chat_dir, files, root)
    server = Server(
        [*map(str, runs), "--allow-adapter-loading", str(root / "runs"), "--max-queue", "24", "--batch-window-ms", "40"]
    )
    yield server, runs, files
    server.stop()


@pytest.fixture(scope="module")
def seq2seq(tiny_t5_dir, tmp_path_factory):
    from conftest import write_dialogue_files

    root = tmp_path_factory.mktemp("serve-t5")
    files = write_dialogue_files(root / "data")
    runs = _two_runs(tiny_t5_dir, files, root)
    server = Server([*map(str, runs), "--batch-window-ms", "40"])
    yield server, runs, files
    server.stop()


def _dialogues(files, n: int) -> list[str]:
    return [json.loads(x)["dialogue"] for x in Path(files["test"]).read_text().splitlines()[:n]]


def test_models_list_the_base_and_each_adapter_with_its_parent(causal, tiny_llama_chat_dir):
    server, runs, _ = causal
    models = {m.id: m for m in server.client().models.list().data}
    base = str(tiny_llama_chat_dir)
    assert list(models) == [base, "summarize-a", "summarize-b"]
    assert models["summarize-a"].parent == base and models[base].parent is None


def test_chat_and_completions_with_the_openai_client_stream_and_usage(causal):
    server, _, files = causal
    client = server.client()
    text = _dialogues(files, 1)[0]
    chat = client.chat.completions.create(
        model="summarize-a", messages=[{"role": "user", "content": text}], max_tokens=6, temperature=0
    )
    answer = chat.choices[0].message.content
    assert answer and chat.usage.completion_tokens <= 6 and chat.usage.prompt_tokens > 10
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    stream = client.chat.completions.create(
        model="summarize-a", messages=[{"role": "user", "content": text}], max_tokens=6, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    done = client.completions.create(model="summarize-b", prompt=text, max_tokens=5, temperature=0)
    streamed = client.completions.create(model="summarize-b", prompt=text, max_tokens=5, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text
    assert done.choices[0].finish_reason in ("length", "stop")
    # stop strings end the answer before them
    words = answer.split()
    if len(words) > 2:
        cut = client.chat.completions.create(
            model="summarize-a",
            messages=[{"role": "user", "content": text}],
            max_tokens=6,
            temperature=0,
            stop=[words[2]],
        )
        assert cut.choices[0].message.content == answer[: answer.index(words[2])]
        assert cut.choices[0].finish_reason == "stop"
    # sampling with a seed is reproducible
    a, b = (
        client.chat.completions.create(
            model="summarize-b",
            messages=[{"role": "user", "content": text}],
            max_tokens=6,
            temperature=1.0,
            top_p=0.9,
            seed=7,
        )
        .choices[0]
        .message.content
        for _ in range(2)
    )
    assert a == b


def test_task_prompt_gives_what_tunelab_generate_gives(causal):
    server, runs, files = causal
    texts = _dialogues(files, 2)
    for run in runs:
        expected = tunelab.summarize(tunelab.open_for_generation(run=run), texts, max_new_tokens=12)
        for text, want in zip(texts, expected):
            got = server.client().chat.completions.create(
                model=run.name,
                messages=[{"role": "user", "content": text}],
                temperature=0,
                max_tokens=12,
                extra_body={"task_prompt": True},
            )
            assert got.choices[0].message.content == want
        cli = subprocess.run(
            [sys.executable, "-m", "tunelab.cli.main", "generate", "--run", str(run), "--max-new-tokens", "12"],
            input=texts[0],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.stdout.strip() == expected[0]


def _greedy_alone_vs_mixed(server: Server, models: list[str], texts: list[str]) -> None:
    def ask(model_text):
        model, text = model_text
        status, body = server.post(
            "/v1/chat/completions",
            {"model": model, "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": text}]},
        )
        assert status == 200, body
        return body["choices"][0]["message"]["content"]

    jobs = [(models[i % len(models)], texts[i % len(texts)]) for i in range(12)]
    alone = [ask(j) for j in jobs]
    before = server.get("/health")[1]["batches"]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(ask, jobs))
    health = server.get("/health")[1]
    assert together == alone
    assert health["largest_batch"] >= 4 and health["batches"] - before < len(jobs)  # they really shared batches


def test_greedy_answers_are_the_same_alone_or_in_a_mixed_adapter_batch(
    causal, seq2seq, tiny_llama_chat_dir, tiny_t5_dir
):
    for (server, _, files), base in ((causal, str(tiny_llama_chat_dir)), (seq2seq, str(tiny_t5_dir))):
        _greedy_alone_vs_mixed(server, [base, "summarize-a", "summarize-b"], _dialogues(files, 6))


def test_adapters_load_and_unload_only_from_allowed_folders(causal, tmp_path):
    server, runs, files = causal
    status, body = server.post("/v1/load_lora_adapter", {"lora_name": "again", "lora_path": str(runs[0] / "adapter")})
    assert status == 200 and "added successfully" in body
    assert "again" in [m.id for m in server.client().models.list().data]
    text = _dialogues(files, 1)[0]
    same = [
        server.post(
            "/v1/chat/completions",
            {"model": m, "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": text}]},
        )[1]["choices"][0]["message"]["content"]
        for m in ("again", "summarize-a")
    ]
    assert same[0] == same[1]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    status, body = server.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(outside)})
    assert status == 403 and body["error"]["param"] == "lora_path"
    assert server.post("/v1/unload_lora_adapter", {"lora_name": "again"})[0] == 200
    status, body = server.post(
        "/v1/chat/completions", {"model": "again", "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_adapter_loading_is_off_unless_enabled(seq2seq):
    server, runs, _ = seq2seq
    status, body = server.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(runs[0] / "adapter")})
    assert status == 404 and body["error"]["code"] == "adapter_loading_disabled"


BAD = [
    (b"{not json", 400, None),
    (json.dumps({"model": "summarize-a", "messages": "hi"}), 400, "messages"),
    (json.dumps({"model": "summarize-a", "messages": []}), 400, "messages"),
    (
        json.dumps({"model": "summarize-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}),
        400,
        "max_tokens",
    ),
    (
        json.dumps({"model": "summarize-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9}),
        400,
        "max_tokens",
    ),
    (
        json.dumps({"model": "summarize-a", "messages": [{"role": "user", "content": "x"}], "temperature": -1}),
        400,
        "temperature",
    ),
    (json.dumps({"model": "summarize-a", "messages": [{"role": "robot", "content": "x"}]}), 400, None),
    (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}), 404, "model"),
    (json.dumps({"model": "summarize-a", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}), 413, None),
    (json.dumps({"model": "summarize-a", "prompt": "   "}), 400, None),
]


def test_bad_requests_get_openai_shaped_errors_and_the_server_stays_up(causal):
    server, _, _ = causal
    for body, status, param in BAD:
        path = (
            "/v1/completions"
            if b'"prompt"' in (body if isinstance(body, bytes) else body.encode())
            else "/v1/chat/completions"
        )
        got, raw = server.request("POST", path, body)
        err = json.loads(raw)["error"]
        assert got == status, (body[:80], got, raw[:300])
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        if param:
            assert param in (err["param"] or ""), err
    status, raw = server.request(
        "POST", "/v1/chat/completions", json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    )
    assert "summarize-a" in json.loads(raw)["error"]["message"]  # names the models served
    assert server.get("/health")[0] == 200


def test_hundreds_of_concurrent_connections_get_answers_or_429(causal):
    """300 connections at once against a queue of 24: each gets 200 or 429 (never an error or a hang)."""
    server, _, _ = causal
    body = json.dumps(
        {
            "model": "summarize-b",
            "messages": [{"role": "user", "content": "hi anna"}],
            "max_tokens": 2,
            "temperature": 0,
        }
    )
    with ThreadPoolExecutor(100) as pool:
        statuses = list(
            pool.map(lambda _: server.request("POST", "/v1/chat/completions", body, timeout=120)[0], range(300))
        )
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 24 and 429 in statuses
    assert server.get("/health")[1]["in_flight"] == 0
    metrics = server.request("GET", "/metrics")[1].decode()
    assert 'tunelab_requests_total{route="/v1/chat/completions",status="429"}' in metrics
    assert "tunelab_request_latency_seconds_bucket" in metrics and "tunelab_queue_depth" in metrics


def test_a_client_that_goes_away_stops_costing_compute(causal):
    server, _, files = causal
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    conn.request(
        "POST",
        "/v1/completions",
        json.dumps(
            {
                "model": "summarize-a",
                "prompt": _dialogues(files, 1)[0],
                "max_tokens": 400,
                "temperature": 0,
                "stream": True,
            }
        ),
        {"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    conn.close()  # mid-stream
    deadline = time.monotonic() + 20
    while server.get("/health")[1]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.get("/health")[1]["in_flight"] == 0
    generated = [
        float(line.split()[-1])
        for line in server.request("GET", "/metrics")[1].decode().splitlines()
        if line.startswith("tunelab_generated_tokens_total")
    ][0]
    time.sleep(0.5)
    again = [
        float(line.split()[-1])
        for line in server.request("GET", "/metrics")[1].decode().splitlines()
        if line.startswith("tunelab_generated_tokens_total")
    ][0]
    assert again == generated  # nothing is generated for it any more


def test_api_key_is_required_off_loopback_and_checked_on_v1(tiny_llama_chat_dir):
    from tunelab.errors import ConfigError
    from tunelab.serving.server import ServeOptions, build

    with pytest.raises(ConfigError, match="needs an API key"):
        build(ServeOptions(model=str(tiny_llama_chat_dir), host="0.0.0.0"))
    server = Server(["--model", str(tiny_llama_chat_dir)], env={"TUNELAB_API_KEY": "s3cret"})
    try:
        status, body = server.post(
            "/v1/chat/completions", {"model": str(tiny_llama_chat_dir), "messages": [{"role": "user", "content": "x"}]}
        )
        assert status == 401 and body["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="wrong").models.list()
        assert server.client(api_key="s3cret").models.list().data[0].id == str(tiny_llama_chat_dir)
        assert server.get("/health")[0] == 200  # not under /v1
    finally:
        server.stop()


def test_sigterm_lets_requests_in_flight_finish(tiny_llama_chat_dir):
    server = Server(["--model", str(tiny_llama_chat_dir)])
    result = {}

    def long_request():
        result["response"] = server.post(
            "/v1/completions",
            {"model": str(tiny_llama_chat_dir), "prompt": "hi anna", "max_tokens": 400, "temperature": 0},
        )

    worker = threading.Thread(target=long_request)
    worker.start()
    deadline = time.monotonic() + 20
    while not server.get("/health")[1]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.stop() == 0
    worker.join(timeout=60)
    status, body = result["response"]
    assert status == 200 and body["usage"]["completion_tokens"] > 0


def test_runs_on_different_bases_are_refused_naming_them(causal, seq2seq):
    from tunelab.errors import ConfigError
    from tunelab.serving.server import ServeOptions, build

    with pytest.raises(
        ConfigError,
        match=r"different base models \(summarize-a, summarize-b on .*; summarize-a, "
        r"summarize-b on .*\)",
    ):
        build(ServeOptions(runs=[*map(str, causal[1]), *map(str, seq2seq[1])]))


def test_vllm_lora_compatibility_check(causal, tmp_path):
    from tunelab.serving.vllm import vllm_lora_problems

    _, runs, _ = causal
    assert vllm_lora_problems(runs[0] / "adapter") == []
    cfg = json.loads((runs[0] / "adapter" / "adapter_config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(
        json.dumps({**cfg, "use_dora": True, "r": 512, "modules_to_save": ["lm_head"]})
    )
    problems = vllm_lora_problems(bad)
    assert any("DoRA" in p for p in problems) and any("rank 512" in p for p in problems)
    assert any("modules_to_save" in p for p in problems)


# --- the playground in a real browser ---------------------------------------------------------------


class _Chrome:
    """Headless Chromium driven over the DevTools protocol (typing and clicking as input events)."""

    def __init__(self, browser: str, profile: Path):
        import urllib.request

        import websocket

        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                pages = json.load(urllib.request.urlopen(f"http://{HOST}:{self.port}/json/list", timeout=2))
                page = next(p for p in pages if p.get("type") == "page")
                break
            except (OSError, StopIteration, ValueError):
                assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
                time.sleep(0.3)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while not self.js(expression):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.2)

    def click(self, selector: str) -> None:
        x, y = self.js(
            f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait()


def test_playground_runs_a_prompt_on_the_base_and_adapters_side_by_side(causal, tmp_path, tiny_llama_chat_dir):
    import base64
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("Chromium is not installed (make setup installs Debian's 'chromium' where apt-get works)")
    server, _, files = causal
    chrome = _Chrome(browser, tmp_path / "profile")
    try:
        chrome.call("Page.enable")
        chrome.call("Page.navigate", url=server.url + "/")
        chrome.wait_for("document.querySelectorAll('input.model').length === 3")
        chrome.wait_for("document.getElementById('examples').options.length > 1")  # test inputs of the runs' task
        chrome.js(
            "(() => { const s = document.getElementById('examples'); s.value = '0';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        assert chrome.js("document.getElementById('prompt').value") == _dialogues(files, 1)[0]
        chrome.js("document.getElementById('prompt').value = ''; document.getElementById('prompt').focus()")
        chrome.call("Input.insertText", text=_dialogues(files, 2)[1])  # typed
        chrome.click("#run")
        chrome.wait_for(
            "document.querySelectorAll('.card').length === 3 && "
            "[...document.querySelectorAll('.card')].every(c => c.dataset.done === '1')"
        )
        cards = chrome.js(
            "[...document.querySelectorAll('.card')].map(c => [c.dataset.model,"
            " c.querySelector('.answer').textContent, c.querySelector('.answer').className,"
            " c.querySelector('.stats').textContent])"
        )
        assert [c[0] for c in cards] == [str(tiny_llama_chat_dir), "summarize-a", "summarize-b"]
        for model, answer, cls, stats in cards:
            assert answer.strip() and "error" not in cls and "tok/s" in stats, (model, answer, stats)
        shot = tmp_path / "playground.png"
        shot.write_bytes(base64.b64decode(chrome.call("Page.captureScreenshot", format="png")["data"]))
        print(f"playground screenshot: {shot}")
        from PIL import Image

        assert Image.open(shot).size[0] >= 1000
    finally:
        chrome.close()


@pytest.mark.slow
def test_real_model_with_two_adapters(tmp_path, dialogsum_dir):
    """SmolLM2-135M-Instruct with two LoRA adapters: mixed batches answer as single requests do, and the
    task prompt gives what `tunelab generate` gives with that adapter."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_serve", Path(__file__).parents[1] / "bench" / "serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        adapters = bench.make_adapters(2, tmp_path)
    except tunelab.ModelError as e:
        pytest.skip(f"smollm2-135m-instruct could not be pulled: {e}")
    server = Server(
        [
            "--model",
            "smollm2-135m-instruct",
            "--adapter",
            f"a={adapters[0]}",
            "--adapter",
            f"b={adapters[1]}",
            "--batch-window-ms",
            "100",
        ]
    )
    try:
        texts = [
            json.loads(x)["dialogue"] for x in (dialogsum_dir / "dialogsum.test.jsonl").read_text().splitlines()[:2]
        ]
        _greedy_alone_vs_mixed(server, ["smollm2-135m-instruct", "a", "b"], texts)
        session = tunelab.open_for_generation(
            model="smollm2-135m-instruct", adapter=adapters[1], overrides=["evaluation.precision=fp32"]
        )
        want = tunelab.summarize(session, texts[:1], max_new_tokens=24)[0]
        got = server.client().chat.completions.create(
            model="b",
            messages=[{"role": "user", "content": texts[0]}],
            temperature=0,
            max_tokens=24,
            extra_body={"task_prompt": True},
        )
        assert got.choices[0].message.content == want and want
    finally:
        server.stop()


def test_a_full_fine_tuning_run_is_served_as_a_model_of_its_own(tiny_t5_dir, tmp_path):
    from conftest import write_dialogue_files

    files = write_dialogue_files(tmp_path / "data")
    tree = experiment(
        tiny_t5_dir,
        files,
        tmp_path,
        name="full-run",
        method={"name": "full"},
        training={"max_steps": 4},
        evaluation={"max_samples": 2, "precision": "fp32", "before": False},
    )
    run = tunelab.finetune(tunelab.build_config(tree), show_progress=False, echo=None).run_dir
    server = Server([str(run)])
    try:
        models = {m.id: m for m in server.client().models.list().data}
        assert "full-run" in models and models["full-run"].parent is None
        text = _dialogues(files, 1)[0]
        want = tunelab.summarize(tunelab.open_for_generation(run=run), [text], max_new_tokens=10)[0]
        got = server.client().completions.create(
            model="full-run", prompt=text, temperature=0, max_tokens=10, extra_body={"task_prompt": True}
        )
        assert got.choices[0].text == want
    finally:
        server.stop()
