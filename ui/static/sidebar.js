// The ⋯ menu on each chat of the sidebar list: rename in place, export, delete.
// Every action goes to the server as JSON {action, id, title?} through a hidden textbox and
// button (ui/sidebar.py parses it strictly and checks the chat is the visitor's).
(() => {
  const LIST = "#conversation-list";
  const ACTION_BOX = "chat-action";
  const ACTION_BUTTON = "chat-action-send";
  const TITLES = "conversation-titles";
  const MENU_ID = "chat-menu";
  const MAX_TITLE = 200;
  let open = null; // {root, button, id, title} while a menu is shown

  // The listed chats' plain titles, by id (the list's labels also carry the time and cost).
  function titles() {
    const box = document.querySelector(`#${TITLES} input, #${TITLES} textarea`);
    try {
      const parsed = JSON.parse(box?.value || "{}");
      return parsed && typeof parsed === "object" ? parsed : {};
    } catch {
      return {};
    }
  }

  function titleOf(label, id, known = titles()) {
    const title = known[id];
    return typeof title === "string" ? title : label.querySelector(":scope > span")?.textContent || "";
  }

  function send(action) {
    window.orchat.send(ACTION_BOX, ACTION_BUTTON, JSON.stringify(action));
  }

  // ---- the ⋯ button on each chat ---------------------------------------------------------

  function decorate() {
    const labels = document.querySelectorAll(`${LIST} label`);
    if (!labels.length) return;
    const known = titles();
    for (const label of labels) {
      const id = label.querySelector('input[type="radio"]')?.value;
      if (!id) continue;
      let button = label.querySelector(":scope > .chat-menu-button");
      if (!button) {
        button = document.createElement("button");
        button.type = "button";
        button.className = "chat-menu-button";
        button.textContent = "⋯";
        button.setAttribute("aria-haspopup", "menu");
        button.setAttribute("aria-expanded", "false");
        label.appendChild(button);
      }
      if (button.dataset.id !== id) button.dataset.id = id;
      // The radio's own name stays the chat's line (not "… Actions for …" from the button).
      const radio = label.querySelector('input[type="radio"]');
      const line = label.querySelector(":scope > span")?.textContent || "";
      if (radio.getAttribute("aria-label") !== line) radio.setAttribute("aria-label", line);
      const name = `Actions for ${titleOf(label, id, known)}`;
      if (button.getAttribute("aria-label") !== name) button.setAttribute("aria-label", name);
    }
  }

  let scheduled = false;
  function scheduleDecorate() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      decorate();
    });
  }

  // ---- the menu --------------------------------------------------------------------------

  function menuItem(text, onChoose, className = "") {
    const item = document.createElement("button");
    item.type = "button";
    item.setAttribute("role", "menuitem");
    item.className = `chat-menu-item ${className}`.trim();
    item.textContent = text;
    item.addEventListener("click", (event) => {
      event.preventDefault();
      onChoose();
    });
    return item;
  }

  function items(root) {
    return [...root.querySelectorAll('[role="menuitem"]')];
  }

  function fill(root, children) {
    root.replaceChildren(...children);
    items(root)[0]?.focus();
  }

  function mainItems(state) {
    const { id, title, button } = state;
    const exportAs = (action) => () => {
      closeMenu(true);
      send({ action, id });
    };
    return [
      menuItem("Rename", () => startRename(button.closest("label"), id, title)),
      menuItem("Export JSON", exportAs("export-json")),
      menuItem("Export Markdown", exportAs("export-markdown")),
      menuItem("Delete…", () => askDelete(state), "danger"),
    ];
  }

  function askDelete(state) {
    const question = document.createElement("p");
    question.className = "chat-menu-question";
    question.textContent = `Delete “${state.title}”? This cannot be undone.`;
    const cancel = menuItem("Cancel", () => fill(state.root, mainItems(state)));
    const confirm = menuItem(
      "Yes, delete",
      () => {
        closeMenu(false);
        document.querySelector("#conversation-search input")?.focus();
        send({ action: "delete", id: state.id });
      },
      "danger",
    );
    state.root.replaceChildren(question, confirm, cancel);
    cancel.focus(); // the safe choice is where the keyboard lands
  }

  function place(root, button) {
    const box = button.getBoundingClientRect();
    const width = root.offsetWidth;
    const left = Math.max(4, Math.min(box.right - width, window.innerWidth - width - 4));
    const below = box.bottom + 2 + root.offsetHeight <= window.innerHeight;
    root.style.left = `${left}px`;
    root.style.top = `${below ? box.bottom + 2 : Math.max(4, box.top - 2 - root.offsetHeight)}px`;
  }

  function openMenu(button) {
    closeMenu(false);
    const label = button.closest("label");
    const id = button.dataset.id;
    const title = titleOf(label, id);
    const root = document.createElement("div");
    root.id = MENU_ID;
    root.className = "chat-menu";
    root.setAttribute("role", "menu");
    root.setAttribute("aria-label", `Actions for ${title}`);
    open = { root, button, id, title };
    root.replaceChildren(...mainItems(open));
    document.body.appendChild(root);
    place(root, button);
    button.setAttribute("aria-expanded", "true");
    button.setAttribute("aria-controls", MENU_ID);
    items(root)[0]?.focus();
  }

  // Close the menu; with `refocus`, the keyboard goes back to its ⋯ button.
  function closeMenu(refocus) {
    if (!open) return;
    const { root, button } = open;
    open = null;
    root.remove();
    button.setAttribute("aria-expanded", "false");
    button.removeAttribute("aria-controls");
    if (refocus && button.isConnected) button.focus();
  }

  function onMenuKey(event) {
    const list = items(open.root);
    const at = list.indexOf(document.activeElement);
    const moves = {
      ArrowDown: (at + 1) % list.length,
      ArrowUp: (at - 1 + list.length) % list.length,
      Home: 0,
      End: list.length - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      list[moves[event.key]]?.focus();
    } else if (event.key === "Escape") {
      event.preventDefault(); // the page's Esc-to-stop leaves a handled Esc alone
      closeMenu(true);
    }
  }

  // ---- rename in place -------------------------------------------------------------------

  function startRename(label, id, title) {
    closeMenu(false);
    if (!label) return;
    const input = document.createElement("input");
    input.type = "text";
    input.className = "chat-rename";
    input.value = title;
    input.maxLength = MAX_TITLE;
    input.setAttribute("aria-label", `New name for ${title}`);
    label.classList.add("chat-renaming");
    const line = label.querySelector(":scope > span");
    if (line) line.after(input);
    else label.appendChild(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = (save) => {
      if (finished) return;
      finished = true;
      const name = input.value.trim();
      const hadFocus = document.activeElement === input;
      input.remove();
      label.classList.remove("chat-renaming");
      if (hadFocus) label.querySelector(":scope > .chat-menu-button")?.focus();
      if (save && name && name !== title) send({ action: "rename", id, title: name });
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true)); // as in other chat apps: a click away keeps it
  }

  // ---- events (delegated: Gradio renders the list after this script runs) -----------------

  // Capture phase: a click on ⋯ or in the rename box must never select (open) the chat.
  document.addEventListener(
    "click",
    (event) => {
      const target = event.target instanceof Element ? event.target : null;
      if (target?.closest(`${LIST} .chat-rename`)) {
        event.preventDefault();
        event.stopPropagation();
        return;
      }
      const button = target?.closest(`${LIST} .chat-menu-button`);
      if (!button) return;
      event.preventDefault();
      event.stopPropagation();
      if (open && open.button === button) closeMenu(true);
      else openMenu(button);
    },
    true,
  );

  document.addEventListener("keydown", (event) => {
    if (open && open.root.contains(event.target)) onMenuKey(event);
  });

  // A press outside the menu, or the keyboard leaving it, closes it.
  document.addEventListener("pointerdown", (event) => {
    if (!open || open.root.contains(event.target) || open.button.contains(event.target)) return;
    closeMenu(false);
  });
  document.addEventListener("focusout", (event) => {
    if (!open || !open.root.contains(event.target)) return;
    const next = event.relatedTarget;
    if (next && (open.root.contains(next) || next === open.button)) return;
    if (next) closeMenu(false); // focus went elsewhere on the page (Tab past the last item)
  });
  window.addEventListener("resize", () => closeMenu(false));
  document.addEventListener(
    "scroll",
    (event) => {
      if (open && !open.root.contains(event.target)) closeMenu(false);
    },
    true,
  );

  new MutationObserver(scheduleDecorate).observe(document.documentElement, {
    childList: true,
    subtree: true,
    characterData: true,
  });
})();
