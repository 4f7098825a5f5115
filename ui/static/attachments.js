// The composer's attachment chips: Gradio shows a preview and a remove button; this adds each
// file's name and size under it. The files are noted as they come in (file picker, drop,
// paste), in order, since the chips themselves carry neither. The server checks every file
// again by its content; this is only a label.
(() => {
  const BOX = "#message-input";
  const CHIP = `${BOX} .thumbnail-wrapper`;
  let files = []; // {name, size}, in the order the chips appear

  const human = (size) => {
    for (const [unit, scale] of [["MB", 1e6], ["KB", 1e3]]) {
      if (size >= scale) return `${(size / scale).toFixed(1).replace(/\.0$/, "")} ${unit}`;
    }
    return `${size} bytes`;
  };
  const note = (list) => {
    for (const file of list ?? []) files.push({ name: file.name || "pasted image", size: file.size });
  };

  document.addEventListener(
    "change",
    (event) => event.target.matches?.(`${BOX} input[type=file]`) && note(event.target.files),
    true,
  );
  document.addEventListener(
    "drop",
    (event) => event.target.closest?.(BOX) && note(event.dataTransfer?.files),
    true,
  );
  document.addEventListener(
    "paste",
    (event) => {
      if (!event.target.closest?.(BOX)) return;
      const pasted = [...(event.clipboardData?.items ?? [])]
        .filter((item) => item.kind === "file" && item.type.includes("image"))
        .map((item) => item.getAsFile())
        .filter(Boolean);
      note(pasted);
    },
    true,
  );
  // Removing a chip removes its entry, so the labels stay with their files.
  document.addEventListener(
    "click",
    (event) => {
      const remove = event.target.closest?.(`${BOX} .delete-button`);
      if (!remove) return;
      const chips = [...document.querySelectorAll(CHIP)];
      const index = chips.indexOf(remove.closest(".thumbnail-wrapper"));
      if (index >= 0) files.splice(index, 1);
    },
    true,
  );

  let shown = 0; // chips at the last look (files arrive before their chips do)
  const label = () => {
    const chips = [...document.querySelectorAll(CHIP)];
    if (chips.length === 0 && shown > 0) files = []; // sent, or all removed
    shown = chips.length;
    chips.forEach((chip, index) => {
      const file = files[index];
      const text = file ? `${file.name} · ${human(file.size)}` : "";
      let span = chip.querySelector(".attachment-label");
      if (!text) return span?.remove();
      if (span?.textContent === text) return;
      if (!span) {
        span = document.createElement("span");
        span.className = "attachment-label";
        chip.append(span);
      }
      span.textContent = text;
      span.title = text;
      chip.setAttribute("aria-label", `Attached: ${text}`);
    });
  };
  new MutationObserver(label).observe(document.body, { childList: true, subtree: true });
})();
