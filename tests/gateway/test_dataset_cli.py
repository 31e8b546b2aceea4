"""``sterling dataset`` against a gateway over HTTP: publish a CSV (terms shown before signing, the
plaintext never sent), then ls, show, pause, resume, top-up, reprice, delist; refusals in words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from marketplace.chain import free_port
from marketplace.consumer import Consumer
from sterling.cli import app as cli
from tests.conftest import toy_spec
from tests.gateway.conftest import Gateway
from tests.gateway.test_bounds import serve


def words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def _csv(path: Path, rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    y = np.where(x @ np.array([1.5, -1.0, 0.5, 0.0]) > 0, "sick", "well")
    text = "age,bmi,pressure,noise,outcome\n" + "".join(
        f"{a:.5f},{b:.5f},{c:.5f},{d:.5f},{label}\n" for (a, b, c, d), label in zip(x, y, strict=True)
    )
    path.write_text(text)
    return text.encode()


def test_a_provider_publishes_a_csv_and_manages_the_listing_from_a_terminal(gateway: Gateway, tmp_path: Path) -> None:
    net = gateway.net
    provider = net.chain.new_account()
    env = {"STERLING_PRIVATE_KEY": provider.key.hex()}
    table = tmp_path / "patients.csv"
    plaintext = _csv(table, 160, 3)
    runner = CliRunner()
    terms = ["--price", str(10**17), "--epsilon-per-job", "2", "--total-epsilon", "6"]
    with serve(gateway.app_with(port=free_port())) as (host, port):
        url = f"http://{host}:{port}"
        count = net.market.dataset_count()
        declined = runner.invoke(cli, ["dataset", "publish", str(table), *terms, "--gateway", url], env=env, input="n\n")
        assert declined.exit_code == 1 and "nothing was sent" in declined.output and "160 rows" in declined.output
        assert "sick, well" in words(declined.output)  # the classes, shown before signing
        assert 'none: consumers will see only "Dataset #N"' in words(declined.output)  # no datasheet: said before signing
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b,y\n1,abc,p\n")
        refused = runner.invoke(cli, ["dataset", "publish", str(bad), *terms, "--yes", "--gateway", url], env=env)
        assert refused.exit_code == 2 and 'line 2, column "b": "abc" is not a number' in words(refused.output)
        assert net.market.dataset_count() == count

        published = runner.invoke(cli, ["dataset", "publish", str(table), *terms, "--yes", "--json", "--gateway", url], env=env)
        assert published.exit_code == 0, published.output
        summary = json.loads(published.output[published.output.index("{") :])
        dataset_id = summary["dataset_id"]
        record = net.market.dataset(dataset_id)
        assert record.provider == provider.address and record.content_hash.hex() == summary["content_hash"] and summary["rows"] == 160
        assert int(record.terms.price_per_job) == 10**17
        stored = net.blobs.get(summary["content_hash"])
        assert plaintext[:40] not in stored and b"age,bmi" not in stored  # the gateway holds ciphertext only

        # A job trains on it: the key manager holds the provider's key and the table is what was read.
        consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
        created = consumer.create_job([dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=10**16)  # type: ignore[arg-type]
        net.worker.run_job(created.job_id)
        assert net.market.job(created.job_id).status.name == "COMPLETED" and consumer.fetch_metrics(created.job_id)["rows"] == 160

        gateway.sync()
        listed = runner.invoke(cli, ["dataset", "ls", "--provider", provider.address, "--json", "--gateway", url])
        assert listed.exit_code == 0 and [d["id"] for d in json.loads(listed.output)["items"]] == [dataset_id]
        shown = runner.invoke(cli, ["dataset", "show", str(dataset_id), "--json", "--gateway", url])
        detail = json.loads(shown.output)
        assert detail["schema"]["feature_names"] == ["age", "bmi", "pressure", "noise"] and detail["schema"]["class_names"] == [
            "sick",
            "well",
        ]
        assert detail["job_ids"] == [created.job_id]

        def run(*args: str, who: dict[str, str] = env) -> str:
            result = runner.invoke(cli, ["dataset", *args, "--gateway", url], env=who)
            assert result.exit_code == 0, result.output
            return result.output

        run("pause", str(dataset_id))
        assert net.market.dataset(dataset_id).status.name == "PAUSED"
        run("resume", str(dataset_id))
        assert net.market.dataset(dataset_id).status.name == "ACTIVE"
        run("reprice", str(dataset_id), "--price", str(3 * 10**17))
        after = net.market.dataset(dataset_id).terms
        assert int(after.price_per_job) == 3 * 10**17 and after.total_epsilon_budget == record.terms.total_epsilon_budget
        run("top-up", str(dataset_id), "--epsilon", "1.5")
        assert net.market.dataset(dataset_id).terms.total_epsilon_budget == record.terms.total_epsilon_budget + 1_500_000
        stranger = runner.invoke(
            cli, ["dataset", "pause", str(dataset_id), "--gateway", url], env={"STERLING_PRIVATE_KEY": net.chain.new_account().key.hex()}
        )
        assert stranger.exit_code == 1 and f"Only the provider of dataset #{dataset_id} can change it." in words(stranger.output)
        run("delist", str(dataset_id), "--yes")
        assert net.market.dataset(dataset_id).status.name == "DELISTED"
        late = runner.invoke(cli, ["dataset", "reprice", str(dataset_id), "--price", "1", "--gateway", url], env=env)
        assert late.exit_code == 1 and f"Dataset #{dataset_id} is delisted and can no longer be changed." in words(late.output)


def test_a_provider_publishes_with_a_datasheet_and_declared_bounds_and_consumers_find_it_by_search(gateway: Gateway, tmp_path: Path) -> None:
    net = gateway.net
    env = {"STERLING_PRIVATE_KEY": net.chain.new_account().key.hex()}
    table = tmp_path / "clinic.csv"
    _csv(table, 150, 5)
    sheet = tmp_path / "sheet.json"
    sheet.write_text(json.dumps({
        "title": "Clinic outcomes kx4", "description": "Outcomes of a clinic's patients, one row per visit.", "tags": ["health", "kx4"],
        "license": "proprietary", "provider_name": "Clinic kx4", "label": {"name": "outcome", "description": "sick or well at discharge"},
        "columns": [{"name": "age", "description": "age at the visit", "unit": "years"}],
    }))  # fmt: skip
    terms = ["--price", str(10**16), "--epsilon-per-job", "1", "--total-epsilon", "3", "--yes", "--json"]
    bounds = ["--bound", "age=-5:5", "--bound", "bmi=-5:5"]
    runner = CliRunner()
    with serve(gateway.app_with(port=free_port())) as (host, port):
        url = f"http://{host}:{port}"
        count = net.market.dataset_count()
        bad_sheet = tmp_path / "bad.json"
        bad_sheet.write_text(json.dumps({**json.loads(sheet.read_text()), "rows": 99, "tags": ["Health"]}))
        refused = runner.invoke(cli, ["dataset", "publish", str(table), *terms, "--datasheet", str(bad_sheet), "--gateway", url], env=env)
        assert refused.exit_code == 2 and "tags.0: a tag is lower-case" in words(refused.output), refused.output
        unknown = runner.invoke(cli, ["dataset", "publish", str(table), *terms, "--bound", "height=0:3", "--gateway", url], env=env)
        assert unknown.exit_code == 2 and "height" in unknown.output
        assert net.market.dataset_count() == count  # nothing listed

        published = runner.invoke(cli, ["dataset", "publish", str(table), *terms, *bounds, "--datasheet", str(sheet), "--gateway", url], env=env)
        assert published.exit_code == 0, published.output
        summary = json.loads(published.output[published.output.index("{") :])
        assert summary["datasheet_hash"] == net.market.datasheet_of(summary["dataset_id"]).hex()
        gateway.sync()

        found = runner.invoke(cli, ["dataset", "ls", "-q", "clinic kx4", "--tag", "health", "--gateway", url], env={"COLUMNS": "200"})
        assert found.exit_code == 0 and "datasets 1–1 of 1" in words(found.output)
        assert "Clinic outcomes kx4" in found.output and " 150 " in found.output and " outcome " in found.output, found.output
        page = json.loads(runner.invoke(cli, ["dataset", "ls", "-q", "kx4", "--json", "--gateway", url]).output)
        assert [d["datasheet"]["title"] for d in page["items"]] == ["Clinic outcomes kx4"]
        assert json.loads(runner.invoke(cli, ["dataset", "ls", "-q", "kx4 dental", "--json", "--gateway", url]).output)["items"] == []
        shown = runner.invoke(cli, ["dataset", "show", str(summary["dataset_id"]), "--gateway", url], env={"COLUMNS": "200"})
        text = words(shown.output)
        assert "Clinic outcomes kx4 (150 rows; proprietary; by Clinic kx4)" in text
        assert "age age at the visit years -5 … 5" in text and "noise" in text
        detail = json.loads(runner.invoke(cli, ["dataset", "show", str(summary["dataset_id"]), "--json", "--gateway", url]).output)
        assert detail["schema"]["feature_bounds"] == [[-5, 5], [-5, 5], None, None]
        # The provider corrects the datasheet later (rows kept from the current one); a stranger cannot.
        dataset_id = str(summary["dataset_id"])
        fixed = tmp_path / "fixed.json"
        fixed.write_text(json.dumps({**json.loads(sheet.read_text()), "title": "Clinic outcomes kx4, corrected"}))
        described = runner.invoke(cli, ["dataset", "describe", dataset_id, "--datasheet", str(fixed), "--gateway", url], env=env)
        assert described.exit_code == 0, described.output
        digest = net.market.datasheet_of(int(dataset_id))
        gateway.sync()
        after = gateway.client.get(f"/api/datasets/{dataset_id}").json()
        assert after["datasheet"]["title"] == "Clinic outcomes kx4, corrected" and after["datasheet"]["rows"] == 150
        assert after["datasheet_hash"] == "0x" + digest.hex() and digest.hex() != summary["datasheet_hash"]
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps({**json.loads(fixed.read_text()), "columns": [{"name": "height"}]}))
        bad = runner.invoke(cli, ["dataset", "describe", dataset_id, "--datasheet", str(wrong), "--gateway", url], env=env)
        assert bad.exit_code == 2 and "columns.0.name" in words(bad.output)
        stranger = {"STERLING_PRIVATE_KEY": net.chain.new_account().key.hex()}
        refused = runner.invoke(cli, ["dataset", "describe", dataset_id, "--datasheet", str(fixed), "--gateway", url], env=stranger)
        assert refused.exit_code == 1 and f"Only the provider of dataset #{dataset_id} can change it." in words(refused.output)
        assert net.market.datasheet_of(int(dataset_id)) == digest


def test_a_provider_publishes_regression_and_survival_tables_with_categorical_columns(gateway: Gateway, tmp_path: Path) -> None:
    net = gateway.net
    env = {"STERLING_PRIVATE_KEY": net.chain.new_account().key.hex()}
    rng = np.random.default_rng(8)
    regression = tmp_path / "outcomes.csv"
    regression.write_text("age,sex,progression\n" + "".join(f"{a:.1f},{'FM'[s]},{p:.1f}\n" for a, s, p in zip(
        rng.uniform(20, 80, 60), rng.integers(0, 2, 60), rng.uniform(25, 340, 60), strict=True)))  # fmt: skip
    survival = tmp_path / "followup.csv"
    survival.write_text("age,futime,death\n" + "".join(f"{a:.1f},{t:.0f},{e}\n" for a, t, e in zip(
        rng.uniform(20, 80, 60), rng.uniform(1, 1400, 60), rng.integers(0, 2, 60), strict=True)))  # fmt: skip
    terms = ["--price", str(10**16), "--epsilon-per-job", "1", "--total-epsilon", "3", "--yes"]
    runner = CliRunner()
    with serve(gateway.app_with(port=free_port())) as (host, port):
        url = f"http://{host}:{port}"
        count = net.market.dataset_count()
        for args, message in [
            (["--target", "progression=0:400"], "add --task regression"),
            (["--task", "regression"], "a regression table needs --target"),
            (["--task", "regression", "--target", "progression=0:400", "--label", "age"], "names its label columns with --target"),
            (["--task", "regression", "--target", "progression=0:400", "--category", "sex"], "is not NAME=A,B,C"),
            (["--task", "regression", "--target", "progression=0:400", "--category", "sex=F"], "needs 2 to"),
            (["--task", "regression", "--target", "progression=0:400", "--category", "sex=F,X"], '"M" is not one of its declared categories'),
            (["--task", "survival", "--time", "futime"], "needs --time, --event and --time-bins"),
        ]:
            refused = runner.invoke(cli, ["dataset", "publish", str(regression), *terms, *args, "--gateway", url], env=env)
            assert refused.exit_code == 2 and message in words(refused.output), (args, refused.output)
        assert net.market.dataset_count() == count  # nothing listed

        published = runner.invoke(cli, ["dataset", "publish", str(regression), *terms, "--task", "regression",
                                        "--target", "progression=0:400", "--category", "sex=F,M", "--json", "--gateway", url], env=env)  # fmt: skip
        assert published.exit_code == 0, published.output
        assert "regression on 1 target (progression, declared 0 to 400)" in words(published.output)
        assert "sex: F, M" in words(published.output)
        dataset_id = json.loads(published.output[published.output.index("{") :])["dataset_id"]
        published = runner.invoke(cli, ["dataset", "publish", str(survival), *terms, "--task", "survival", "--time", "futime",
                                        "--event", "death", "--time-bins", "365,730,1095,1461", "--gateway", url], env=env)  # fmt: skip
        assert published.exit_code == 0, published.output
        assert "survival: time to event in 4 intervals ending at 365, 730, 1095, 1461" in words(published.output)
        gateway.sync()
        schema = gateway.client.get(f"/api/datasets/{dataset_id}").json()["schema"]
        assert (schema["task"], schema["feature_names"], schema["target_names"]) == ("regression", ["age", "sex"], ["progression"])
        assert schema["target_bounds"] == [[0, 400]] and schema["categories"] == {"sex": ["F", "M"]}
        shown = runner.invoke(cli, ["dataset", "show", str(dataset_id), "--gateway", url], env={"COLUMNS": "200"})
        assert "label (the label): regression on 1 target (progression, declared 0 to 400)" in words(shown.output), shown.output
