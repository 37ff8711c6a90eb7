"""The web app in a real browser: app.py runs in its own process on 127.0.0.1 and Debian's chromium,
headless, driven by Selenium through /usr/bin/chromedriver, uploads a rendered talking head and
speech, presses Generate and waits for the result; the page's video must play an mp4 of the
expected frame count. A text file uploaded as the video must show its error in the page.

`make browser` installs chromium and chromium-driver (`make test` does it first). Without them the
test is skipped locally and fails under CI (the CI variable set)."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import av
import pytest

from evaluation import synthetic_demo
from helpers import render_clip
from launchers import REPO_ROOT, child_env

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Flags for a headless chromium on a closed network: without the background-networking ones, its
# own connections (updates, sync) are refused and slow the start.
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2000",
)
FRAMES = 30  # the rendered clip's; the speech is longer, so the video sets the count (released rule)


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        reason = f"{' and '.join(missing)} missing; `make browser` installs Debian's chromium and chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """app.py on a free port, offering only the demo student; yields (url, out_root)."""
    root = tmp_path / "checkpoints" / "demo"
    root.mkdir(parents=True)
    os.symlink(REPO_ROOT / synthetic_demo.DEMO_STUDENT, root / os.path.basename(synthetic_demo.DEMO_STUDENT))
    port, out_root = free_port(), tmp_path / "jobs"
    log = open(tmp_path / "app.log", "w+")
    env = {**child_env(), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}  # the uploads' cache goes with the test
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--out_root", str(out_root),
         "--checkpoint_root", str(tmp_path / "checkpoints")],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"app.py did not answer on {url}:\n{log.read()[-3000:]}")
                time.sleep(0.5)
        yield url, out_root
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def browser():
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def upload_and_generate(driver, url: str, video: str, audio: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-upload input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#video-upload input[type=file]").send_keys(video)
    driver.find_element(By.CSS_SELECTOR, "#audio-upload input[type=file]").send_keys(audio)
    # The uploads are done when the page shows the file's name and the audio's player.
    WebDriverWait(driver, 30).until(lambda d: os.path.splitext(os.path.basename(video))[0] in d.find_element(By.ID, "video-upload").text)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio-upload audio, #audio-upload .waveform-container"))
    driver.find_element(By.ID, "generate").click()


def count_frames(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.timeout(300)
def test_the_page_lip_syncs_an_upload_and_shows_errors(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from audio.audio import save_wav
    from dataset.synthetic import speech_like

    url, out_root = server
    video, audio, bad = tmp_path / "face.mp4", tmp_path / "speech.wav", tmp_path / "broken.mp4"
    render_clip(video, n_frames=FRAMES, seed=3)
    save_wav(speech_like(2.0, seed=5), audio, 16000)
    bad.write_text("this is a text file, not a video")

    upload_and_generate(browser, url, str(video), str(audio))
    note = browser.find_element(By.ID, "network-note")
    assert note.is_displayed() and "synthetic heads" in note.text
    player = WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result-video video"))[0]
    src = player.get_attribute("src")
    assert src.endswith(".mp4")
    assert browser.execute_script("return arguments[0].canPlayType('video/mp4; codecs=\"avc1.42E01E\"')", player)
    played = browser.execute_async_script(
        "const [v, done] = arguments; v.muted = true;"
        "v.play().then(() => done([v.readyState, v.duration, v.videoWidth])).catch(e => done(String(e)));", player)
    assert isinstance(played, list), played
    ready, duration, width = played
    assert ready >= 2 and duration == pytest.approx(FRAMES / 25, abs=0.1) and width == 224
    fetched = tmp_path / "fetched.mp4"
    with urllib.request.urlopen(src, timeout=30) as response:
        fetched.write_bytes(response.read())
    assert count_frames(str(fetched)) == FRAMES
    command = browser.find_element(By.CSS_SELECTOR, "#command textarea").get_attribute("value")
    assert command.startswith("python generate.py ") and "diff2lip_synthetic64_student2.pt" in command
    assert browser.find_elements(By.CSS_SELECTOR, "#sheet img")
    [job] = os.listdir(out_root)
    assert count_frames(str(out_root / job / "result.mp4")) == FRAMES

    upload_and_generate(browser, url, str(bad), str(audio))
    error = WebDriverWait(browser, 60).until(lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".toast-body.error")
                                                        if e.is_displayed()])[0]
    assert "broken.mp4" in error.text and "could not be decoded" in error.text
    assert os.listdir(out_root) == [job]  # the failed job left nothing
