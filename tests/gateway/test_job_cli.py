"""``sterling job`` against a gateway over HTTP: create (eligibility and cost before signing, the key
file before the transaction), ls, show, watch (live, through the events), cancel; refusals in words."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from pathlib import Path

from typer.testing import CliRunner

from marketplace.chain import free_port
from sterling.cli import app as cli
from tests.conftest import toy_spec
from tests.gateway.conftest import Gateway, list_toy
from tests.gateway.test_bounds import serve


def words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_a_consumer_creates_watches_fetches_and_cancels_jobs_from_a_terminal(gateway: Gateway, tmp_path: Path) -> None:
    net = gateway.net
    listed, _ = list_toy(net, 81, price=10**17, max_epsilon=2.0)
    gateway.sync()
    consumer = net.chain.new_account()
    env = {"STERLING_PRIVATE_KEY": consumer.key.hex()}
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(toy_spec(epochs=2).to_bytes())
    keys = tmp_path / "keys"
    runner = CliRunner()
    with serve(gateway.app_with(port=free_port())) as (host, port):
        url = f"http://{host}:{port}"
        base = ["--datasets", str(listed.dataset_id), "--spec", str(spec_file), "--key-dir", str(keys), "--gateway", url]
        jobs_before = net.market.job_count()

        # Refused before signing: a dataset's terms would revert the transaction.
        too_much = runner.invoke(cli, ["job", "create", *base, "--epsilon", "5", "--yes"], env=env)
        assert too_much.exit_code == 1 and "allows at most 2 ε per job; 5 asked" in words(too_much.output)
        declined = runner.invoke(cli, ["job", "create", *base, "--epsilon", "1", "--worker-fee", "1000"], env=env, input="n\n")
        assert declined.exit_code == 1 and "nothing was sent" in declined.output
        assert f"{10**17 + 1000:,}" in declined.output  # the total was shown before asking
        assert net.market.job_count() == jobs_before and not (keys.exists() and any(keys.iterdir()))
        bad_spec = tmp_path / "bad.json"
        bad_spec.write_text('{"architecture": "transformer"}')
        refused_spec = runner.invoke(
            cli, ["job", "create", "--datasets", "1", "--spec", str(bad_spec), "--epsilon", "1", "--gateway", url], env=env
        )
        assert refused_spec.exit_code == 2 and "not a valid model spec" in words(refused_spec.output)

        created = runner.invoke(cli, ["job", "create", *base, "--epsilon", "1", "--worker-fee", str(10**16), "--yes", "--json"], env=env)
        assert created.exit_code == 0, created.output
        summary = json.loads(created.output[created.output.index("{") :])
        job_id = summary["job_id"]
        record = net.market.job(job_id)
        assert record.consumer == consumer.address and int(record.escrow) == 10**17 + 10**16 == int(summary["escrow"])
        key_file = Path(summary["key_file"])
        assert key_file.name == f"sterling-job-{job_id}-key.json" and stat.S_IMODE(key_file.stat().st_mode) == 0o600
        saved = json.loads(key_file.read_text())
        assert saved["job_id"] == job_id and bytes.fromhex(saved["public_key"]) == record.consumer_key
        assert [p.name for p in keys.iterdir()] == [key_file.name]  # the pending file became the job's

        gateway.sync()
        listed_jobs = runner.invoke(cli, ["job", "ls", "--consumer", consumer.address, "--gateway", url, "--json"])
        assert listed_jobs.exit_code == 0 and [j["id"] for j in json.loads(listed_jobs.output)["items"]] == [job_id]
        shown = runner.invoke(cli, ["job", "show", str(job_id), "--gateway", url, "--json"])
        assert shown.exit_code == 0 and json.loads(shown.output)["status"] == "open"
        missing = runner.invoke(cli, ["job", "show", "999999", "--gateway", url])
        assert missing.exit_code == 1 and "999999" in missing.output
        nowhere = runner.invoke(cli, ["job", "watch", "999999", "--gateway", url])
        assert nowhere.exit_code == 1 and "there is no job 999999" in nowhere.output

        # `job watch` follows the job live while a worker trains it (the indexer runs alongside).
        watcher = subprocess.Popen(
            [sys.executable, "-m", "sterling.cli", "job", "watch", str(job_id), "--gateway", url, "--timeout", "240", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stop = threading.Event()

        def index() -> None:
            while not stop.wait(0.2):
                gateway.sync()

        indexer = threading.Thread(target=index, daemon=True)
        indexer.start()
        try:
            net.worker.run_job(job_id)
            out, errors = watcher.communicate(timeout=240)
        finally:
            stop.set()
            indexer.join(10)
            watcher.kill()
        assert watcher.returncode == 0, errors
        watched = json.loads(out)
        assert watched["status"] == "completed" and 0 < watched["epsilon_spent"] <= 1.0

        # The model opens with the key file `job create` saved.
        fetched = runner.invoke(
            cli, ["model", "fetch", str(job_id), "--key-file", str(key_file), "--out", str(tmp_path / "m.safetensors"), "--gateway", url]
        )
        assert fetched.exit_code == 0, fetched.output

        # Cancel an open job; a second cancel, or another account's, is refused in words.
        second = runner.invoke(cli, ["job", "create", *base, "--epsilon", "0.5", "--yes", "--json"], env=env)
        assert second.exit_code == 0, second.output
        second_id = json.loads(second.output[second.output.index("{") :])["job_id"]
        stranger = runner.invoke(
            cli, ["job", "cancel", str(second_id), "--gateway", url], env={"STERLING_PRIVATE_KEY": net.chain.new_account().key.hex()}
        )
        assert stranger.exit_code == 1 and f"Only the consumer who created job #{second_id} can do this." in words(stranger.output)
        cancelled = runner.invoke(cli, ["job", "cancel", str(second_id), "--gateway", url], env=env)
        assert cancelled.exit_code == 0, cancelled.output
        assert net.market.job(second_id).status.name == "CANCELLED"
        again = runner.invoke(cli, ["job", "cancel", str(second_id), "--gateway", url], env=env)
        assert again.exit_code == 1 and f"Job #{second_id} is cancelled now and can no longer be changed this way." in words(again.output)
