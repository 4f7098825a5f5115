// Accessible names and states Gradio leaves out, set again whenever the page changes.
// Checked by tests/test_accessibility.py (axe-core and by name); one rule per gap found.
(() => {
  const setAttr = (element, name, value) => {
    if (element && element.getAttribute(name) !== value) element.setAttribute(name, value);
  };
  const blockLabel = (element) =>
    element.closest(".block")?.querySelector('[data-testid="block-info"]')?.textContent.trim();

  const RULES = [
    // Label-less textboxes are named "Textbox" by Gradio: name them for what they hold.
    () => setAttr(document.querySelector("#message-input textarea"), "aria-label", "Message"),
    () => {
      for (const box of document.querySelectorAll('[data-testid="textbox"][placeholder]')) {
        if (!box.hasAttribute("aria-label") && blockLabel(box) === "Textbox") {
          setAttr(box, "aria-label", box.placeholder);
        }
      }
    },
    () => setAttr(document.getElementById("conversation-list"), "aria-label", "Conversations"),
    // Accordions: say open/closed; the arrow is decoration.
    () => {
      for (const toggle of document.querySelectorAll("button.label-wrap")) {
        setAttr(toggle, "aria-expanded", String(toggle.classList.contains("open")));
        setAttr(toggle.querySelector(".icon"), "aria-hidden", "true");
      }
    },
    // Dropdown arrows and the footer's logo are pictures of nothing to read out.
    () => {
      for (const arrow of document.querySelectorAll("svg.dropdown-arrow")) {
        setAttr(arrow, "aria-hidden", "true");
      }
      setAttr(document.querySelector(".show-api img"), "alt", "");
    },
    // A toast's header is a button holding the close button (nested controls): the close
    // button stays, the header becomes plain text.
    () => {
      for (const header of document.querySelectorAll('.toast-header[role="button"]')) {
        header.removeAttribute("role");
        header.removeAttribute("tabindex");
      }
    },
    // Any other icon-only button: its tooltip is its name.
    () => {
      for (const button of document.querySelectorAll("button[title]:not([aria-label])")) {
        if (!button.textContent.trim()) setAttr(button, "aria-label", button.title);
      }
    },
  ];

  let scheduled = false;
  const fix = () => {
    scheduled = false;
    for (const rule of RULES) rule();
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(fix);
  };
  new MutationObserver(schedule).observe(document.body, { childList: true, subtree: true });
  // An accordion opening only changes a class: look again after the click is handled.
  document.addEventListener("click", () => setTimeout(schedule, 0));
  schedule();
})();
