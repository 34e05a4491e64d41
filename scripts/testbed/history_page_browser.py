#!/usr/bin/env python3
"""The history page end to end: a real Jupyter server, its real
jupyter-server-proxy, headless Chromium through WebDriver.

Run by examples/tests/history_browser.rs with the python of the venv that
scripts/testbed/jupyter.sh installs (jupyter_server, jupyter-server-proxy,
nbformat, requests, selenium):

1. starts Jupyter with a token on a free port, its root a fresh directory;
2. starts `tether sync ROOT --to REMOTE --ui-bind 127.0.0.1:UI_PORT`;
3. saves a notebook three times through Jupyter's contents REST API (its
   own atomic save; a checkpoint under .ipynb_checkpoints after each, as
   JupyterLab does), waiting for each to become a tether checkpoint;
4. drives headless Chromium through
   http://127.0.0.1:JUPYTER_PORT/proxy/UI_PORT/: the timeline shows the
   three saves, the diff of the first and last shows the changed cell,
   "Restore a copy" of the first creates `analysis (tether ….ipynb` with
   the first version beside the original; screenshots go to OUT;
5. checks that no checkpoint ever held Jupyter's temporary or checkpoint
   files.

Exits 0 when everything held, 1 with the reason otherwise. Every process it
starts is stopped by its PID at the end.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import nbformat
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def free_ports(n):
    """N distinct ports nothing listens on (all bound until chosen)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_until(what, limit, check):
    """Polls `check` every 0.2 s until it returns a true value."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out after {limit}s waiting for {what} (last error: {last})")


def notebook(code):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Analysis")]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i}"
    return nb


def stop(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop on SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tether", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--chromedriver", required=True)
    ap.add_argument("--remote", help="default: a file:// store under OUT")
    ap.add_argument("--docs-screenshot", help="also copy the diff screenshot here")
    a = ap.parse_args()

    out = os.path.abspath(a.out)
    shutil.rmtree(out, ignore_errors=True)
    root = os.path.join(out, "jupyter-root")
    home = os.path.join(out, "home")
    for d in (root, home):
        os.makedirs(d)
    remote = a.remote or f"file://{out}/store"
    jport, uport = free_ports(2)
    token = secrets.token_hex(16)
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("TETHER_") or k.startswith("JUPYTER"):
            env.pop(k)
    env.update(
        HOME=home,
        JUPYTER_CONFIG_DIR=os.path.join(home, "jupyter-config"),
        JUPYTER_DATA_DIR=os.path.join(home, "jupyter-data"),
        JUPYTER_RUNTIME_DIR=os.path.join(home, "jupyter-runtime"),
    )
    procs = {}
    driver = None
    logs = {n: open(os.path.join(out, f"{n}.log"), "w") for n in ("jupyter", "tether")}
    try:
        procs["jupyter"] = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={jport}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}"],
            env=env, stdout=logs["jupyter"], stderr=subprocess.STDOUT, cwd=out,
        )
        api = f"http://127.0.0.1:{jport}/api"
        auth = {"Authorization": f"token {token}"}
        wait_until("Jupyter", 120, lambda: requests.get(f"{api}/status", headers=auth, timeout=5).ok)

        procs["tether"] = subprocess.Popen(
            [a.tether, "sync", root, "--to", remote, "--ui-bind", f"127.0.0.1:{uport}",
             "--debounce", "300ms", "--max-latency", "3s",
             "--state-dir", os.path.join(out, "state")],
            env=dict(env, TETHER_LOG_FORMAT="json"), stdout=logs["tether"],
            stderr=subprocess.STDOUT, cwd=out,
        )
        page = f"http://127.0.0.1:{uport}/"
        wait_until("the history page", 60, lambda: requests.get(page, timeout=5).ok)

        def checkpoints():
            r = requests.get(page, timeout=30)
            return r.text.count('class="checkpoint"')

        versions = [["x = 1\nprint(x)"], ["x = 2\nprint(x)"], ["x = 2\nprint(x)", "y = x * 10"]]
        for i, code in enumerate(versions, 1):
            body = {"type": "notebook", "format": "json", "content": notebook(code)}
            r = requests.put(f"{api}/contents/analysis.ipynb", headers=auth,
                             data=json.dumps(body), timeout=30)
            assert r.ok, f"save {i}: {r.status_code} {r.text}"
            r = requests.post(f"{api}/contents/analysis.ipynb/checkpoints", headers=auth, timeout=30)
            assert r.ok, f"checkpoint {i}: {r.status_code} {r.text}"
            wait_until(f"checkpoint {i}", 60, lambda: checkpoints() >= i)
        assert os.path.isdir(os.path.join(root, ".ipynb_checkpoints")), "Jupyter made no checkpoint"

        opts = webdriver.ChromeOptions()
        opts.binary_location = a.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1200,900"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=a.chromedriver), options=opts)
        driver.set_page_load_timeout(60)
        base = f"http://127.0.0.1:{jport}/proxy/{uport}/"
        # The token logs the browser in to Jupyter (a cookie); every later
        # page goes through the proxy with that cookie.
        driver.get(f"{base}?token={token}")
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.checkpoint")
        assert len(rows) == 3, f"timeline shows {len(rows)} checkpoints: {driver.page_source[:2000]}"
        assert "Checkpoints" in driver.title or driver.find_element(By.TAG_NAME, "h1").text == "Checkpoints"
        driver.save_screenshot(os.path.join(out, "timeline.png"))

        # Compare the oldest with the newest through the timeline's form.
        radios = driver.find_elements(By.CSS_SELECTOR, "input[name=old]")
        radios[-1].click()
        driver.find_elements(By.CSS_SELECTOR, "input[name=new]")[0].click()
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until("the diff page", 60, lambda: driver.current_url.startswith(base + "diff?"))
        text = driver.find_element(By.TAG_NAME, "main").text
        heads = [h.text for h in driver.find_elements(By.TAG_NAME, "h3")]
        assert any(h.startswith("M") and "analysis.ipynb" in h for h in heads), heads
        assert "cell 2 (code) changed" in text, text
        assert "-x = 1" in text and "+x = 2" in text, text
        assert "cell 3 (code) added" in text, text
        driver.save_screenshot(os.path.join(out, "diff.png"))
        if a.docs_screenshot:
            shutil.copyfile(os.path.join(out, "diff.png"), a.docs_screenshot)

        # Restore a copy of the first version: browse it, open the file.
        driver.get(base)
        driver.find_elements(By.CSS_SELECTOR, "tr.checkpoint")[-1].find_element(
            By.LINK_TEXT, "browse").click()
        wait_until("the tree page", 60, lambda: driver.current_url.startswith(base + "tree?"))
        driver.find_element(By.LINK_TEXT, "analysis.ipynb").click()
        wait_until("the file page", 60, lambda: driver.current_url.startswith(base + "file?"))
        assert driver.find_element(By.TAG_NAME, "h1").text == "analysis.ipynb"
        driver.find_element(By.CSS_SELECTOR, "form#restore button").click()
        wait_until("the restored page", 60, lambda: driver.current_url == base + "restore")
        copy = driver.find_element(By.CSS_SELECTOR, "code.copy").text
        assert copy.startswith("analysis (tether ") and copy.endswith(").ipynb"), copy
        driver.save_screenshot(os.path.join(out, "restored.png"))
        with open(os.path.join(root, copy)) as f:
            restored = nbformat.read(f, as_version=4)
        assert restored.cells[1].source == "x = 1\nprint(x)", restored.cells[1].source
        with open(os.path.join(root, "analysis.ipynb")) as f:
            current = nbformat.read(f, as_version=4)
        assert len(current.cells) == 3, "the original was touched"
        # The copy is a file like any other: tether pushes it.
        wait_until("the copy's checkpoint", 60, lambda: checkpoints() >= 4)

        # No checkpoint ever held Jupyter's temporary or checkpoint files.
        hist = subprocess.run([a.tether, "history", "--from", remote], env=env,
                              capture_output=True, text=True, check=True).stdout
        ids = [l.split()[0] for l in hist.splitlines()[1:] if l.strip()]
        assert len(ids) >= 4, hist
        for cid in ids:
            ls = subprocess.run([a.tether, "ls", "--from", remote, "--at", cid, "-R"], env=env,
                                capture_output=True, text=True, check=True).stdout
            for bad in (".ipynb_checkpoints", ".~", "-checkpoint.ipynb"):
                assert bad not in ls, f"checkpoint {cid} holds {bad}: {ls}"
        print(f"history page end to end: ok ({len(ids)} checkpoints; screenshots in {out})")
        return 0
    except AssertionError as e:
        if driver is not None:
            try:
                driver.save_screenshot(os.path.join(out, "failure.png"))
            except Exception:
                pass
        print(f"FAILED: {e}", file=sys.stderr)
        for n in ("tether", "jupyter"):
            logs[n].flush()
            with open(os.path.join(out, f"{n}.log")) as f:
                print(f"--- {n}.log (tail)\n" + "".join(f.readlines()[-30:]), file=sys.stderr)
        return 1
    finally:
        if driver is not None:
            driver.quit()
        stop(procs.get("tether"), "tether")
        stop(procs.get("jupyter"), "jupyter")
        for f in logs.values():
            f.close()


if __name__ == "__main__":
    sys.exit(main())
