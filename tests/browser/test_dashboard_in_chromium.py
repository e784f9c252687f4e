"""The dashboard in a real headless Chromium against a real server holding the demo cohort (auth on).

Each page is saved under build/screens/ for review. Order matters only for the first test: it starts
signed out, so it shows the login a person goes through.
"""

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import (
    TABLET,
    Served,
    open_page,
    screenshot,
    severe_console_entries,
    sign_in,
)

PAGES = {
    "overview": "/dashboard",
    "figures": "/dashboard/figures",
    "screening": "/dashboard/screening",
    "quality": "/dashboard/quality",
    "patients": "/dashboard/patients",
}


def text_of(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


def test_signing_in_with_a_trial_office_token_opens_the_dashboard(driver: WebDriver, served: Served) -> None:
    driver.delete_all_cookies()
    driver.get(f"{served.url}/dashboard")
    assert "/dashboard/login" in driver.current_url
    assert text_of(driver, "h1") == "Sign in to the trial office dashboard"
    screenshot(driver, "login")
    sign_in(driver, served)
    assert driver.current_url == f"{served.url}/dashboard"
    assert text_of(driver, "h1").startswith("Where the trial stands")
    assert "Signed in as trial-office" in text_of(driver, ".session")
    assert severe_console_entries(driver) == []


def test_the_overview_shows_the_api_numbers_for_the_demo(driver: WebDriver, served: Served) -> None:
    open_page(driver, served, f"/dashboard?as_of={served.as_of}")
    for assay in ("flow", "ngs"):
        api = served.api("/api/v1/endpoints/primary", assay=assay, as_of=served.as_of)
        overall = api["overall"]
        row = f"#primary-{assay} tr[data-row=overall]"
        assert text_of(driver, f"{row} .count") == f"{overall['n_negative']}/{overall['n']}"
        low, high = overall["ci95"]
        assert text_of(driver, f"{row} .ci") == f"{low * 100:.1f}\N{EN DASH}{high * 100:.1f} %"
        assert percent(overall["rate"]) in text_of(driver, row)
        card = text_of(driver, f"[data-metric=primary-{assay}]")
        assert card.startswith(f"{overall['n_negative']}/{overall['n']}")
    consort = served.api("/api/v1/consort", as_of=served.as_of)
    for step in consort["steps"]:
        assert text_of(driver, f"#consort tr[data-step={step['step']}] td") == str(step["n"])
    enrolled = next(s["n"] for s in consort["steps"] if s["step"] == "enrolled")
    assert text_of(driver, "[data-metric=enrolled]").startswith(f"{enrolled} ")
    screenshot(driver, "overview-laptop")
    screenshot(driver, "overview-tablet", TABLET)
    assert severe_console_entries(driver) == []


def test_every_page_loads_without_console_errors_and_its_images_show(
    driver: WebDriver, served: Served
) -> None:
    for name, path in PAGES.items():
        open_page(driver, served, f"{path}?as_of={served.as_of}")
        assert severe_console_entries(driver) == [], name
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)"
        )
        assert broken == [], name
        for image in driver.find_elements(By.TAG_NAME, "img"):
            assert image.get_attribute("alt"), image.get_attribute("src")
        if name == "screening":
            decisions = served.api("/api/v1/screening-log")["decisions"]
            assert len(driver.find_elements(By.CSS_SELECTOR, "#screening tbody tr")) == len(decisions) == 1
        if name != "overview":
            screenshot(driver, name)
    assert len(driver.find_elements(By.CSS_SELECTOR, "img.figure")) == 0  # the last page has none
    open_page(driver, served, f"/dashboard/figures?as_of={served.as_of}")
    assert len(driver.find_elements(By.CSS_SELECTOR, "img.figure")) == 4


def test_the_keyboard_reaches_the_skip_link_and_every_page_link(driver: WebDriver, served: Served) -> None:
    open_page(driver, served, "/dashboard/patients")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.text == "Skip to main content"
    assert focused.value_of_css_property("outline-style") != "none"
    reached = []
    for _ in range(12):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(driver.switch_to.active_element.text)
    for title in ("Overview", "Figures", "Screening log", "Data quality", "Patients"):
        assert title in reached
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    # Following the skip link moves focus into the page's content.
    open_page(driver, served, "/dashboard/patients")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert driver.current_url.endswith("#main")
    assert driver.execute_script("return document.activeElement.id") == "main"


def test_clicking_a_patient_opens_their_timeline_with_its_evidence(driver: WebDriver, served: Served) -> None:
    open_page(driver, served, "/dashboard/patients")
    link = driver.find_element(By.CSS_SELECTOR, "#patients tbody th a")
    link.click()
    WebDriverWait(driver, 10).until(lambda d: "/dashboard/patients/" in d.current_url)
    assert text_of(driver, "h1").startswith("Timeline of patient")
    patient_id = driver.current_url.rsplit("/", 1)[1]
    api = served.api(f"/api/v1/patients/{patient_id}/timeline")
    rows = driver.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == len(api["results"])
    assert len(driver.find_elements(By.CSS_SELECTOR, "#timepoints tbody tr")) == len(api["timepoints"])
    evidence = {c.get_attribute("title") for c in driver.find_elements(By.CSS_SELECTOR, "#results code")}
    assert {r["observation"] for r in api["results"]} <= evidence
    assert severe_console_entries(driver) == []
    screenshot(driver, "patient")


def test_signing_out_returns_to_the_login(driver: WebDriver, served: Served) -> None:
    open_page(driver, served, "/dashboard")
    driver.find_element(By.CSS_SELECTOR, ".session button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "/dashboard/login" in d.current_url)
    driver.get(f"{served.url}/dashboard/patients")
    assert "/dashboard/login" in driver.current_url
    assert severe_console_entries(driver) == []
