// Keyboard shortcuts: Esc stops the answer being written; Ctrl+Shift+O (Cmd+Shift+O on a Mac)
// starts a new chat. Listened for on window, so handlers on the page (a menu closing on Esc)
// run first and can claim the key with preventDefault.
(() => {
  const shown = (element) => !!element && element.getClientRects().length > 0;
  const buttonOf = (id) => {
    const element = document.getElementById(id);
    return element?.tagName === "BUTTON" ? element : element?.querySelector("button");
  };

  const stopAnswer = (event) => {
    // An open list (the model picker) closes on Esc: leave the answer alone then.
    if (event.target instanceof Element && event.target.closest('[aria-expanded="true"]')) return;
    const stop = buttonOf("stop-btn");
    if (!shown(stop)) return;
    event.preventDefault();
    stop.click();
  };

  const newChat = (event) => {
    const start = buttonOf("new-chat");
    if (!start) return;
    event.preventDefault(); // Ctrl+Shift+O is the browser's bookmarks window
    start.click();
    document.querySelector("#message-input textarea")?.focus();
  };

  window.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    if (event.key === "Escape") {
      stopAnswer(event);
    } else if (
      (event.ctrlKey || event.metaKey) &&
      event.shiftKey &&
      !event.altKey &&
      event.key.toLowerCase() === "o"
    ) {
      newChat(event);
    }
  });
})();
