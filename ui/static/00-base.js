// Shared helpers for the page's scripts (loaded first: file names sort after "00-").
window.orchat = window.orchat || {
  // Set a (hidden) Gradio textbox's value the way typing would, so Gradio sees it.
  setText(elemId, value) {
    const box = document.querySelector(`#${elemId} textarea, #${elemId} input`);
    if (!box) return false;
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
    return true;
  },
  // Click a Gradio button by its elem_id (hidden buttons included).
  click(elemId) {
    const button = document.getElementById(elemId);
    if (!button) return false;
    (button.tagName === "BUTTON" ? button : button.querySelector("button"))?.click();
    return true;
  },
  // Send one action to the server: write it into a hidden box, then press its button.
  send(boxId, buttonId, value) {
    if (!this.setText(boxId, value)) return false;
    setTimeout(() => this.click(buttonId), 0);
    return true;
  },
};
