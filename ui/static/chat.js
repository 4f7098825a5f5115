// The chat area: the open chat's address (?c=<id>) with back/forward, free scrolling while
// an answer streams, copying an answer without its footer, version arrows and "↻ Other model".
(() => {
  const orchat = window.orchat;
  const params = () => new URLSearchParams(window.location.search);
  let firstAddress = params().has("c"); // opened at a chat's address: fix it in place
  // After back/forward the address is already right: until the server shows that chat (or
  // a few seconds pass), what it reports about earlier requests must not rewrite it.
  let expected = null;
  let expectedUntil = 0;

  // The server says which chat is open ("" for a new one): keep the address bar in step.
  orchat.showAddress = (id) => {
    const wanted = (id || "").trim();
    if (expected !== null && Date.now() < expectedUntil) {
      if (wanted === expected) expected = null;
      return;
    }
    expected = null;
    if (firstAddress && !wanted) return; // not yet: the chat of the address is being opened
    const query = params();
    if ((query.get("c") || "") === wanted) {
      firstAddress = false;
      return;
    }
    if (wanted) query.set("c", wanted);
    else query.delete("c");
    const search = query.toString();
    const url = window.location.pathname + (search ? `?${search}` : "") + window.location.hash;
    if (firstAddress) window.history.replaceState({ c: wanted }, "", url);
    else window.history.pushState({ c: wanted }, "", url);
    firstAddress = false;
  };

  // The page's opening at an address is done: `id` is the chat shown ("" if none was found).
  orchat.settleAddress = (id) => {
    if (firstAddress && !(id || "").trim()) {
      const query = params();
      query.delete("c");
      const search = query.toString();
      window.history.replaceState({ c: "" }, "", window.location.pathname + (search ? `?${search}` : ""));
    }
    firstAddress = false;
    orchat.showAddress(id);
  };

  window.addEventListener("popstate", () => {
    const id = params().get("c") || "";
    expected = id;
    expectedUntil = Date.now() + 5000;
    if (id) orchat.send("open-request", "open-request-go", id);
    else orchat.click("new-chat");
  });

  // Copy: our footer (model, cost, speed, versions), error line and sources list are not
  // part of the answer.
  const FOOTER = /(\n\n> ⚠️[^\n]*)?(\n\n<div class="answer-sources"[^>\n]*>\u2062[^\n]*<\/div>)?\n\n<sub>\u2063[^\n]*<\/sub>/g;
  const clipboard = navigator.clipboard;
  if (clipboard && clipboard.writeText) {
    const write = clipboard.writeText.bind(clipboard);
    clipboard.writeText = (text) =>
      write(typeof text === "string" ? text.replace(FOOTER, "") : text);
  }

  // Scrolling: follow new text only while the reader is at the bottom (the chat's own
  // autoscroll is off); scrolled up, Gradio's "Scroll down" button jumps to the latest.
  const NEAR_BOTTOM_PX = 80;
  const scroller = () => document.querySelector("#chat .bubble-wrap, #chat .panel-wrap");
  const watched = new WeakSet();
  const watch = (el) => {
    if (watched.has(el)) return;
    watched.add(el);
    // Whether the reader was at the bottom is judged against the height before the change.
    let lastHeight = el.scrollHeight;
    new MutationObserver(() => {
      if (el.scrollHeight === lastHeight) return;
      const wasAtBottom = lastHeight - el.scrollTop - el.clientHeight <= NEAR_BOTTOM_PX;
      if (wasAtBottom) el.scrollTop = el.scrollHeight;
      lastHeight = el.scrollHeight;
    }).observe(el, { childList: true, subtree: true, characterData: true });
  };

  new MutationObserver(() => {
    const el = scroller();
    if (el) watch(el);
  }).observe(document.documentElement, { childList: true, subtree: true });

  // Version arrows ("‹ 2/3 ›") are links to #version:<message index>:<step>; they ask the
  // server to show that version instead of navigating.
  document.addEventListener("click", (event) => {
    const link = event.target.closest?.("#chat a[href*='#version:']");
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    const [, index, step] = link.getAttribute("href").split("#version:")[1].match(/^(\d+):(-?1)$/) || [];
    if (index !== undefined) orchat.send("version-request", "version-request-go", `${index}:${step}`);
  }, true);

  // "↻ Other model" under an answer links to #other-model:<nth question>: it asks the server
  // for the chooser (a model list and Retry) instead of navigating.
  document.addEventListener("click", (event) => {
    const link = event.target.closest?.("#chat a[href*='#other-model:']");
    if (!link) return;
    event.preventDefault();
    event.stopPropagation();
    const [, nth] = link.getAttribute("href").split("#other-model:")[1].match(/^(\d+)$/) || [];
    if (nth !== undefined) {
      orchat.send("other-model-request", "other-model-go", nth);
      focusChooserWhenShown(link);
    }
  }, true);

  // The chooser takes the focus when it opens (keyboard users land in the model list) and
  // Esc inside it cancels, giving the focus back to the link that opened it.
  let chooserOpener = null;
  function focusChooserWhenShown(opener, triesLeft = 60) {
    chooserOpener = opener;
    const row = document.getElementById("other-model-row");
    const input = row?.querySelector("#other-model-picker input");
    if (row && input && row.offsetParent !== null) {
      input.focus();
      return;
    }
    if (triesLeft > 0) setTimeout(() => focusChooserWhenShown(opener, triesLeft - 1), 50);
  }
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !event.target.closest?.("#other-model-row")) return;
    event.preventDefault();
    event.stopPropagation();
    document.getElementById("other-model-cancel")?.click();
    chooserOpener?.focus();
  }, true);
})();
