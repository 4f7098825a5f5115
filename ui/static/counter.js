// The composer's character counter, and a clear refusal before a too-long message is sent.
// The server checks the length again (and says the same); this only spares the round trip and
// keeps the text in the box. The limit comes from #app-header's data-max-input-chars.
(() => {
  const INPUT = "#message-input textarea";
  const SHOW_FROM = 0.8; // of the limit
  const format = (n) => n.toLocaleString("en-US");

  const limit = () => {
    const value = document.getElementById("app-header")?.dataset.maxInputChars;
    const parsed = Number.parseInt(value ?? "", 10);
    return Number.isFinite(parsed) && parsed > 0 ? parsed : null;
  };
  // The server counts code points (Python's len), not UTF-16 units.
  const length = (text) => {
    let count = 0;
    for (const _ of text) count++;
    return count;
  };

  const ensureCounter = () => {
    const composer = document.getElementById("composer");
    if (!composer || document.getElementById("message-counter")) return;
    const counter = document.createElement("div");
    counter.id = "message-counter";
    counter.innerHTML =
      '<span class="count" hidden></span>' +
      '<p class="refusal" role="status" aria-live="polite"></p>';
    composer.after(counter);
    counted = null;
  };

  let counted = null;
  const update = () => {
    const counter = document.getElementById("message-counter");
    const box = document.querySelector(INPUT);
    const max = limit();
    if (!counter || !box || !max || box.value === counted) return;
    counted = box.value;
    const used = length(box.value);
    const over = used > max;
    const count = counter.querySelector(".count");
    count.hidden = used < max * SHOW_FROM;
    count.textContent = `${format(used)} / ${format(max)}`;
    counter.classList.toggle("over", over);
    const refusal = counter.querySelector(".refusal");
    refusal.textContent = over ? `Too long: ${format(used)} of ${format(max)} characters.` : "";
  };

  // Send or Enter with too long a message: say so under the box, send nothing, keep the text.
  const refuse = (event) => {
    const box = document.querySelector(INPUT);
    const max = limit();
    if (!box || !max) return;
    const used = length(box.value);
    if (used <= max) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    const refusal = document.querySelector("#message-counter .refusal");
    if (refusal) {
      refusal.textContent =
        `Too long: ${format(used)} of ${format(max)} characters. ` +
        "Shorten it or send it in parts.";
    }
  };
  const isSendKey = (event) =>
    event.key === "Enter" && !event.shiftKey && !event.isComposing && event.target.matches?.(INPUT);

  // Capture phase on window: before Gradio's own listeners on the box and the button.
  window.addEventListener("keydown", (event) => isSendKey(event) && refuse(event), true);
  window.addEventListener("keypress", (event) => isSendKey(event) && refuse(event), true);
  window.addEventListener(
    "click",
    (event) => event.target instanceof Element && event.target.closest("#send-btn") && refuse(event),
    true,
  );
  document.addEventListener("input", (event) => event.target.matches?.(INPUT) && update());
  // Gradio also sets the box itself (cleared once sent, refilled by undo): no input event then,
  // but the page changes around it, so each change of the page counts again (cheap if same).
  const onPageChange = () => {
    ensureCounter();
    update();
  };
  new MutationObserver(onPageChange).observe(document.body, { childList: true, subtree: true });
  onPageChange();
})();
