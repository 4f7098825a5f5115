// Light/dark theme: a toggle in the page header, remembered in this browser.
// Gradio picks the theme once, before this runs (?__theme=, else the system preference), by
// the "dark" class on <body>; the app is drawn after this script, so it never flashes.
(() => {
  const KEY = "orchat.theme";
  const BUTTON_ID = "theme-toggle";
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");

  const stored = () => {
    try {
      return localStorage.getItem(KEY);
    } catch {
      return null; // storage blocked: the system preference applies
    }
  };
  // An explicit ?__theme= wins (Gradio's own switch), then the stored choice, then the system.
  const wanted = () => {
    const choice = new URL(location.href).searchParams.get("__theme") || stored();
    if (choice === "dark" || choice === "light") return choice;
    return systemDark.matches ? "dark" : "light";
  };
  const isDark = () => document.body.classList.contains("dark");

  const showState = (button) => {
    const dark = isDark();
    // The name stays the same and aria-pressed says the state (a toggle's label never flips).
    button.setAttribute("aria-pressed", String(dark));
    button.title = dark ? "Switch to light theme" : "Switch to dark theme";
    button.querySelector(".theme-toggle-icon").textContent = dark ? "☀" : "☾";
  };
  const apply = (theme) => {
    // Switch at once: Gradio's colour transitions would fade each control on its own.
    const root = document.documentElement;
    root.classList.add("theme-switching");
    requestAnimationFrame(() => requestAnimationFrame(() => root.classList.remove("theme-switching")));
    document.body.classList.toggle("dark", theme === "dark");
    const button = document.getElementById(BUTTON_ID);
    if (button) showState(button);
  };

  const toggle = () => {
    const theme = isDark() ? "light" : "dark";
    try {
      localStorage.setItem(KEY, theme);
    } catch {
      // not remembered, but applied to this page
    }
    const url = new URL(location.href);
    if (url.searchParams.has("__theme")) {
      url.searchParams.delete("__theme"); // else the address would override the choice
      history.replaceState(history.state, "", url);
    }
    apply(theme);
  };

  const makeButton = () => {
    const button = document.createElement("button");
    button.id = BUTTON_ID;
    button.type = "button";
    button.setAttribute("aria-label", "Dark theme");
    button.innerHTML = '<span class="theme-toggle-icon" aria-hidden="true"></span>';
    button.addEventListener("click", toggle);
    showState(button);
    return button;
  };
  const ensureButton = () => {
    if (document.getElementById(BUTTON_ID)) return;
    document.getElementById("app-header")?.prepend(makeButton());
  };

  apply(wanted());
  // Gradio follows system changes; a stored choice still wins (this listener runs after).
  systemDark.addEventListener("change", () => apply(wanted()));
  new MutationObserver(ensureButton).observe(document.body, { childList: true, subtree: true });
  ensureButton();
})();
