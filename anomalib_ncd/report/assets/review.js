// The report's review panel: rename, merge, move (images or single regions), filter and sort, kept in local storage and
// downloaded as review.json for `anomalib-ncd review --run RUN --edits review.json`.
// Plain DOM, no library, no network: the page stays one offline file.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("review-data").textContent);
  var storageKey = "anomalib-ncd-review:" + data.run;
  var state = emptyState();
  try {
    var saved = JSON.parse(window.localStorage.getItem(storageKey) || "null");
    if (saved && saved.rename && saved.merge && saved.move) {
      state = saved;
      state.regions = saved.regions || {};  // edits saved before regions could move
    }
  } catch (error) { /* no storage (file:// in some browsers): edits live until the page closes */ }

  function emptyState() { return { rename: {}, merge: {}, move: {}, regions: {} }; }

  function save() {
    try { window.localStorage.setItem(storageKey, JSON.stringify(state)); } catch (error) { /* see above */ }
    refresh();
  }

  // the name a class ends with: a merge follows its target's name (chains resolved, cycles cut)
  function finalName(name) {
    var seen = {};
    while (state.merge[name] && !seen[name]) { seen[name] = true; name = state.merge[name]; }
    return state.rename[name] || name;
  }

  function targets() {
    var names = [];
    data.classes.forEach(function (name) {
      var final = finalName(name);
      if (names.indexOf(final) < 0) { names.push(final); }
    });
    [state.move, state.regions].forEach(function (moves) {
      Object.keys(moves).forEach(function (key) {
        var name = moves[key];
        if (name !== "unknown" && names.indexOf(name) < 0) { names.push(name); }
      });
    });
    if (names.indexOf("normal") < 0) { names.push("normal"); }
    names.push("unknown");
    return names;
  }

  function edits() {
    var classes = {};
    data.classes.forEach(function (name) {
      var final = finalName(name);
      if (final !== name) { classes[name] = final; }
    });
    return {
      format: "anomalib-ncd-review", version: 1, run: data.run,
      classes: classes, images: Object.assign({}, state.move), regions: Object.assign({}, state.regions)
    };
  }

  function option(select, value, label) {
    var element = document.createElement("option");
    element.value = value;
    element.textContent = label;
    select.appendChild(element);
  }

  function refresh() {
    var review = edits();
    var count = Object.keys(review.classes).length + Object.keys(review.images).length +
      Object.keys(review.regions).length;
    document.getElementById("review-count").textContent = count + (count === 1 ? " edit" : " edits");
    var names = targets();
    document.querySelectorAll("select.move").forEach(function (select) {
      var card = select.closest(".card");
      var current = state.move[card.dataset.image] || "";
      select.innerHTML = "";
      option(select, "", "keep in " + finalName(card.dataset.class));
      names.forEach(function (name) { option(select, name, "move to " + name); });
      select.value = current;
      card.classList.toggle("moved", current !== "");
      card.querySelector(".moved-to").textContent = current ? "moved to " + current : "";
    });
    document.querySelectorAll(".regions li[data-region]").forEach(function (item) {
      var select = item.querySelector("select");
      var current = state.regions[item.dataset.region] || "";
      select.innerHTML = "";
      option(select, "", "keep (" + finalName(item.dataset.class) + ")");
      names.forEach(function (name) { option(select, name, "move region to " + name); });
      select.value = current;
      item.classList.toggle("moved", current !== "");
    });
    document.querySelectorAll("section.gallery[data-class]").forEach(function (section) {
      var name = section.dataset.class;
      var input = section.querySelector("input.rename");
      var merge = section.querySelector("select.merge");
      if (!input) { return; }
      if (document.activeElement !== input) { input.value = state.rename[name] || name; }
      merge.innerHTML = "";
      option(merge, "", "merge into ...");
      data.classes.forEach(function (other) {
        if (other !== name) { option(merge, other, "merge into " + finalName(other)); }
      });
      merge.value = state.merge[name] || "";
      input.disabled = Boolean(state.merge[name]);
      section.querySelector(".final-name").textContent =
        finalName(name) !== name ? "reviewed: " + finalName(name) : "";
    });
  }

  function setUpClassControls() {
    document.querySelectorAll("section.gallery[data-class]").forEach(function (section) {
      var name = section.dataset.class;
      if (name === "unknown") { return; }
      var bar = document.createElement("div");
      bar.className = "class-review";
      bar.innerHTML = '<label>name <input class="rename" type="text" maxlength="120"></label> ' +
        '<select class="merge"></select> <span class="final-name"></span>';
      section.querySelector("h2").after(bar);
      var input = bar.querySelector("input.rename");
      input.addEventListener("change", function () {
        var value = input.value.trim();
        if (!value || value === name) { delete state.rename[name]; } else { state.rename[name] = value; }
        save();
      });
      bar.querySelector("select.merge").addEventListener("change", function (event) {
        if (event.target.value) { state.merge[name] = event.target.value; } else { delete state.merge[name]; }
        save();
      });
    });
  }

  function setUpCards() {
    document.querySelectorAll(".card[data-image]").forEach(function (card) {
      var controls = document.createElement("div");
      controls.className = "card-review";
      controls.innerHTML = '<select class="move"></select> <span class="moved-to"></span>';
      var meta = card.querySelector("figcaption.meta");
      meta.insertBefore(controls, meta.querySelector(".regions"));  // the image's menu above its regions
      controls.querySelector("select").addEventListener("change", function (event) {
        if (event.target.value) { state.move[card.dataset.image] = event.target.value; }
        else { delete state.move[card.dataset.image]; }
        save();
      });
      card.querySelectorAll(".regions li[data-region]").forEach(function (item) {
        var select = document.createElement("select");
        select.className = "move-region";
        item.appendChild(select);
        select.addEventListener("change", function (event) {
          if (event.target.value) { state.regions[item.dataset.region] = event.target.value; }
          else { delete state.regions[item.dataset.region]; }
          save();
        });
      });
      card.querySelectorAll(".frame img").forEach(function (image) {
        image.addEventListener("click", function () { enlarge(image, card.dataset.full); });
      });
      card.querySelector(".name").addEventListener("click", function () { pickPoints(card.dataset.image); });
    });
  }

  // the image itself at full resolution when it is on this disk (thin scratches), else the thumbnail
  function enlarge(image, full) {
    var box = document.getElementById("lightbox");
    var large = box.querySelector("img");
    if (!large) {  // made on first use: an empty image would count as a broken one
      large = document.createElement("img");
      box.insertBefore(large, box.firstChild);
    }
    var caption = box.querySelector("figcaption");
    large.onerror = function () {
      large.onerror = null;
      large.src = image.src;
      caption.textContent = image.alt + " (the image file is not on this machine: thumbnail)";
    };
    large.src = full || image.src;
    caption.textContent = full ? "full resolution: " + decodeURI(full.replace("file://", "")) : image.alt;
    box.hidden = false;
  }

  function filterAndSort() {
    var text = document.getElementById("review-filter").value.trim().toLowerCase();
    var key = document.getElementById("review-sort").value;
    document.querySelectorAll(".grid").forEach(function (grid) {
      var cards = Array.prototype.slice.call(grid.querySelectorAll(".card"));
      cards.forEach(function (card) {
        card.hidden = text !== "" && card.dataset.image.toLowerCase().indexOf(text) < 0;
      });
      cards.sort(function (a, b) {
        if (key === "name") { return a.dataset.image.localeCompare(b.dataset.image); }
        return (parseFloat(b.dataset[key]) || -Infinity) - (parseFloat(a.dataset[key]) || -Infinity);
      });
      cards.forEach(function (card) { grid.appendChild(card); });
    });
  }

  function download() {
    var blob = new Blob([JSON.stringify(edits(), null, 2)], { type: "application/json" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "review.json";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  // the reverse of a point click: outline the image's points in the embedding and scroll there
  function pickPoints(path) {
    var points = document.querySelectorAll("#embedding-points circle");
    var picked = null;
    points.forEach(function (point) {
      var match = point.dataset.image === path;
      point.classList.toggle("picked", match);
      if (match) { picked = point; }
    });
    if (picked) { picked.parentNode.appendChild(picked); picked.scrollIntoView({ block: "center" }); }
  }

  function pointClicked(event) {
    var point = event.target.closest("circle[data-image]");
    if (!point) { return; }
    var card = document.querySelector('.card[data-image="' + CSS.escape(point.dataset.image) + '"]');
    if (!card) { return; }
    var item = card.querySelector('.regions li[data-region="' + CSS.escape(point.dataset.region || "") + '"]');
    [card, item].forEach(function (element) {
      if (!element) { return; }
      element.classList.add("flash");
      window.setTimeout(function () { element.classList.remove("flash"); }, 1500);
    });
    card.scrollIntoView({ block: "center" });
  }

  setUpClassControls();
  setUpCards();
  document.getElementById("review-download").addEventListener("click", download);
  document.getElementById("review-reset").addEventListener("click", function () {
    state = emptyState();
    save();
  });
  document.getElementById("review-filter").addEventListener("input", filterAndSort);
  document.getElementById("review-sort").addEventListener("change", filterAndSort);
  document.getElementById("lightbox").addEventListener("click", function (event) {
    event.currentTarget.hidden = true;
  });
  var embedding = document.getElementById("embedding-points");
  if (embedding) { embedding.addEventListener("click", pointClicked); }
  refresh();
}());
