"""The decision console on the live stack, in a real browser (Debian's headless Chromium
driven by Selenium): the job decides simulated traffic with delayed labels, the audit
service indexes it and computes health; the test searches a decided event, checks that
its page shows its features and outcome and that the tiles show traffic, and saves
screenshots under docs/img/. Prometheus scrapes of the service and of Flink's reporter
are checked on the same run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from feature_views.definitions import FEATURE_NAMES
from rtd_core.config import PROJECT_ROOT
from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.audit_service import AuditServiceProcess
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from tests.integration.test_audit_service import audit_config, store_counts, wait_for

pytestmark = pytest.mark.integration
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
IMG = PROJECT_ROOT / "docs" / "img"
MATURITY_MS = 5_000


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def flink_metrics(config) -> str:
    """Every endpoint of Flink's Prometheus reporter on the stack (JobManager, TaskManagers)."""
    texts = []
    first = config.flink.prometheus_port
    for port in range(first, first + config.flink.prometheus_port_range):
        try:
            texts.append(requests.get(f"http://127.0.0.1:{port}/", timeout=2).text)
        except requests.RequestException:
            continue
    return "\n".join(texts)


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver: `rtd setup` "
                           "installs them (apt-get install -y chromium chromium-driver)")
def test_console_in_a_browser_on_the_live_stack(local_stack, run_id, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = audit_config(run_id, tmp_path)
    # Its own console port beside the test stack's audit service; a short maturity so
    # that the run's labels are judged within the test.
    config = base.model_copy(update={"audit": base.audit.model_copy(update={
        "console_port": local_stack.audit.console_port + 1,
        "label_maturity_ms": MATURITY_MS, "health_interval_s": 0.5})})
    url = config.audit.console_url
    service = AuditServiceProcess(config, name=f"audit-{run_id}")
    service.start()
    job_id = submit(config)
    try:
        summary = run_simulation(config, count=1500, rate=150, seed=13, malformed_share=0.0,
                                 label_delay_ms=2_000, progress=False)
        valid = summary.valid_event_ids
        wait_for(lambda: store_counts(config)["traces"] >= len(valid), 240)
        decisions = {d["event_id"]: d for d in (
            json.loads(r.value) for r in read_all(config, config.kafka.topics.decisions))}

        def mature_labels() -> int:
            h = requests.get(f"{url}/api/health", timeout=3).json()
            return h["accuracy"]["windows"]["5"]["labelled"]

        wait_for(lambda: mature_labels() >= len(valid), MATURITY_MS / 1000 + 120)
        health = requests.get(f"{url}/api/health", timeout=3).json()
        own_metrics = requests.get(f"{url}/metrics", timeout=3).text
        flink_text = flink_metrics(local_stack)

        one = decisions[valid[len(valid) // 2]]
        driver = browser()
        try:
            wait = WebDriverWait(driver, 30)
            driver.get(url + "/")
            wait.until(lambda d: "decisions in the last" in d.find_element(
                By.CSS_SELECTOR, "#tile-fallback .sub").text)
            tile_text = driver.find_element(By.CSS_SELECTOR, "#tile-fallback .sub").text
            latency_tile = driver.find_element(By.CSS_SELECTOR, "#tile-latency .big").text
            accuracy_tile = driver.find_element(By.CSS_SELECTOR, "#tile-accuracy .big").text
            IMG.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(IMG / "console.png"))
            box = driver.find_element(By.ID, "q")
            box.send_keys(one["event_id"])
            box.submit()
            wait.until(ec.presence_of_element_located((By.ID, "features")))
            page_event = driver.find_element(By.ID, "event-id").text
            page_outcome = driver.find_element(By.ID, "outcome").text
            features_text = driver.find_element(By.ID, "features").text
            driver.save_screenshot(str(IMG / "console-decision.png"))
        finally:
            driver.quit()
    finally:
        service.stop()
        FlinkCluster(config).cancel(job_id)

    traffic = int(tile_text.split(" decisions")[0])
    assert traffic == health["traffic"]["decisions"] > 0
    assert latency_tile.endswith(" ms")
    assert accuracy_tile.startswith("P ")
    assert page_event == one["event_id"]
    assert page_outcome == one["outcome"]
    assert all(name in features_text for name in FEATURE_NAMES)
    assert health["completeness"]["share_complete"] == 1.0
    groups = health["accuracy"]["windows"]["5"]["groups"]
    everything = next(g for g in groups if g["path"] == "ALL")
    assert everything["n"] == len(valid)
    assert everything["rules_only"]["n"] == everything["decision"]["n"] == len(valid)
    assert "rtd_trace_completeness 1.0" in own_metrics
    assert "rtd_decision_latency_ms" in own_metrics
    # Flink's reporter: the JobManager's and the running job's task metrics.
    assert "flink_jobmanager_numRunningJobs" in flink_text
    assert "flink_taskmanager_job_task_numRecordsIn" in flink_text
