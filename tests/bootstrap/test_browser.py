"""The labelling page in headless Chromium (Selenium, the system's chromium + chromedriver).

Each test serves a fresh project on a free port, presses the keys a person
presses, and checks what landed in the database. Screenshots are saved under
the test's tmp_path (and $BOOTSTRAP_SCREENSHOT_DIR when set); their paths are
printed.
"""

import os
import shutil

import pytest
from sqlalchemy import select

from keras_fgvc.bootstrap import db as schema
from tests.bootstrap.conftest import make_project, running_server

CHROMIUM = os.environ.get("BOOTSTRAP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BOOTSTRAP_CHROMEDRIVER", "/usr/bin/chromedriver")



@pytest.fixture(scope="module")
def browsers():
    """A factory of headless Chromium sessions (each its own profile); all quit at the end."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} "
                    "(Debian chromium and chromium-driver: `make test-services`)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000", "--no-first-run",
                     "--disable-extensions", "--disable-background-networking"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                  options=options)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def site(tmp_path):
    db = str(tmp_path / "project.db")
    store, info = make_project(db, str(tmp_path), n_pool=30)
    with running_server(db) as url:
        yield url, store, info
    store.close()


def wait(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


def body(driver, key):
    return driver.execute_script(f"return document.body.dataset.{key} || ''")


def press(driver, key, decided=None):
    """Press `key` on the page; with `decided`, wait until that many decisions are recorded."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()
    if decided is not None:
        wait(driver, lambda d: body(d, "decided") == str(decided) and body(d, "ready") == "1")


def screenshot(driver, tmp_path, name):
    path = str(tmp_path / f"{name}.png")
    assert driver.save_screenshot(path)
    print(f"screenshot: {path}")
    out = os.environ.get("BOOTSTRAP_SCREENSHOT_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        shutil.copy(path, os.path.join(out, f"{name}.png"))
        print(f"screenshot: {os.path.join(out, f'{name}.png')}")
    return path


def decisions(store, labeler=None):
    d = schema.Decision
    query = select(d.task_id, d.labeler, d.decision, d.seconds).order_by(d.id)
    if labeler:
        query = query.where(d.labeler == labeler)
    with store._read() as session:
        return session.execute(query).all()


def leased(store, labeler):
    a = schema.Assignment
    with store._read() as session:
        return set(session.scalars(select(a.task_id).where(a.labeler == labeler)))


def open_page(driver, url):
    driver.get(url)
    wait(driver, lambda d: body(d, "ready") == "1")


def test_page_shows_the_candidate_and_its_evidence(browsers, site, tmp_path):
    url, store, info = site
    driver = browsers()
    open_page(driver, f"{url}/?labeler=ann")
    task_id = int(body(driver, "taskId"))
    assert task_id in leased(store, "ann")
    candidate = driver.find_element("id", "candidate")
    wait(driver, lambda d: d.execute_script("return arguments[0].complete && "
                                            "arguments[0].naturalWidth", candidate) == 24)
    (row,) = [t for t in store.outcomes(1) if t[0]["task_id"] == task_id]
    assert candidate.get_attribute("src").endswith(f"/images/{row[0]['image_id']}")
    assert driver.find_element("id", "category-name").text == row[0]["category"]
    assert driver.find_element("id", "score-value").text == f"{row[0]['score']:.3f}"
    definition = dict((c.name, c.definition) for c in info["categories"])[row[0]["category"]]
    assert driver.find_element("id", "category-definition").text == definition
    exemplars = driver.find_elements("css selector", "#exemplars img")
    assert 3 <= len(exemplars) <= 6
    assert len(driver.find_elements("css selector", "#neighbors img")) == 3
    wait(driver, lambda d: all(d.execute_script("return arguments[0].naturalWidth", e) == 24
                               for e in exemplars))
    wait(driver, lambda d: "decided" in d.find_element("id", "progress").text)
    assert "localhost" not in driver.page_source and "cdn" not in driver.page_source.lower()
    screenshot(driver, tmp_path, "labelling_page")


def test_keys_accept_reject_undo(browsers, site, tmp_path):
    url, store, _ = site
    driver = browsers()
    open_page(driver, f"{url}/?labeler=ann")
    first = int(body(driver, "taskId"))
    press(driver, "y", decided=1)
    second = int(body(driver, "taskId"))
    assert second != first
    press(driver, "n", decided=2)
    assert [(r.task_id, r.decision) for r in decisions(store)] == [(first, "accept"),
                                                                  (second, "reject")]
    assert all(r.seconds is not None and r.seconds > 0 for r in decisions(store))
    press(driver, "z", decided=1)  # undo: the reject is gone, the task is shown again
    assert int(body(driver, "taskId")) == second
    assert [(r.task_id, r.decision) for r in decisions(store)] == [(first, "accept")]
    press(driver, "u", decided=2)
    assert [(r.task_id, r.decision) for r in decisions(store)] == [(first, "accept"),
                                                                  (second, "unsure")]
    press(driver, "z", decided=1)
    press(driver, "z", decided=0)
    assert int(body(driver, "taskId")) == first and decisions(store) == []
    screenshot(driver, tmp_path, "after_undo")


def test_a_task_that_went_to_another_labeler_is_skipped_with_a_message(browsers, tmp_path):
    """Ann's page holds a task past its lease; cy gets it and decides it; ann's key press
    is not recorded, the page says why and moves on to her next task."""
    import time

    db = str(tmp_path / "project.db")
    store, _ = make_project(db, str(tmp_path), n_pool=30, lease_seconds=1)
    with running_server(db) as url:
        driver = browsers()
        open_page(driver, f"{url}/?labeler=ann")
        held = int(body(driver, "taskId"))
        time.sleep(2.5)  # ann's leases lapse
        taken = [t["task_id"] for t in store.next_tasks("cy", 30)]
        assert held in taken
        store.record_decisions([{"task_id": held, "labeler": "cy", "decision": "reject"}])
        press(driver, "y")
        wait(driver, lambda d: body(d, "ready") == "1" and int(body(d, "taskId")) != held)
        text = driver.find_element("id", "message").text
        assert text.startswith(f"Not recorded: task {held} went to other labelers"), text
        assert body(driver, "decided") == "0"
        assert [(r.task_id, r.labeler, r.decision) for r in decisions(store)] == [
            (held, "cy", "reject")]
    store.close()


def test_the_name_is_asked_once_and_kept(browsers, site):
    url, store, _ = site
    driver = browsers()
    driver.get(f"{url}/")
    dialog = driver.find_element("id", "name-dialog")
    wait(driver, lambda d: dialog.is_displayed())
    driver.find_element("id", "name-input").send_keys("carol\n")
    wait(driver, lambda d: body(d, "ready") == "1")
    assert driver.find_element("id", "labeler").text == "carol"
    press(driver, "y", decided=1)
    assert [r.labeler for r in decisions(store)] == ["carol"]
    open_page(driver, f"{url}/")  # reloaded: no prompt, the name is kept
    assert not driver.find_element("id", "name-dialog").is_displayed()
    assert driver.find_element("id", "labeler").text == "carol"


def test_grid_bulk_reject(browsers, site, tmp_path):
    url, store, _ = site
    driver = browsers()
    open_page(driver, f"{url}/grid?labeler=gil&category=bee")
    page = [int(i) for i in body(driver, "pageTasks").split(",")]
    tiles = driver.find_elements("css selector", "#grid .tile")
    assert len(tiles) == len(page) == 10  # every 'bee' task fits one page
    tiles[1].click()
    tiles[4].click()
    tiles[4].click()  # a second click unmarks
    tiles[6].click()
    assert len(driver.find_elements("css selector", "#grid .tile.selected")) == 2
    screenshot(driver, tmp_path, "grid_page")
    press(driver, "\ue007")  # Enter: reject the marked, accept the rest
    wait(driver, lambda d: body(d, "recorded") == "10" and body(d, "pageTasks") == "")
    got = {r.task_id: r.decision for r in decisions(store, "gil")}
    assert got == {t: "reject" if i in (1, 6) else "accept" for i, t in enumerate(page)}
    open_page(driver, f"{url}/grid?labeler=gil&category=ant")
    ants = [int(i) for i in body(driver, "pageTasks").split(",")]
    press(driver, "b")  # bulk reject the whole page
    wait(driver, lambda d: body(d, "pageTasks") == "")
    got = {r.task_id: r.decision for r in decisions(store, "gil")}
    assert all(got[t] == "reject" for t in ants) and len(got) == 10 + len(ants)


def test_two_labelers_in_two_browsers_never_see_the_same_task(browsers, site, tmp_path):
    url, store, _ = site
    ann, bob = browsers(), browsers()
    open_page(ann, f"{url}/?labeler=ann")
    open_page(bob, f"{url}/?labeler=bob")
    shown = {"ann": [], "bob": []}
    for step in range(1, 7):
        for name, driver in (("ann", ann), ("bob", bob)):
            shown[name].append(int(body(driver, "taskId")))
            press(driver, "y" if step % 2 else "n", decided=step)
    assert not set(shown["ann"]) & set(shown["bob"])
    assert not leased(store, "ann") & leased(store, "bob")
    for name in shown:
        assert [r.task_id for r in decisions(store, name)] == shown[name]
    screenshot(bob, tmp_path, "second_labeler")


def test_status_page(browsers, site, tmp_path):
    url, store, _ = site
    tasks = store.next_tasks("ann", 5)
    store.record_decisions([{"task_id": t["task_id"], "labeler": "ann", "decision": "accept",
                             "seconds": 1.0} for t in tasks])
    driver = browsers()
    open_page(driver, f"{url}/status")
    text = driver.find_element("tag name", "body").text
    assert "Round 1: labelling" in text and "ann" in text
    assert "bee" in driver.find_element("id", "categories").text
    quality = driver.find_element("id", "quality").text
    assert "precision" in quality and "recall, corrected by gold" in quality
    assert "no gold items" in quality  # this project decided no gold: nothing to correct with
    screenshot(driver, tmp_path, "status_page")
