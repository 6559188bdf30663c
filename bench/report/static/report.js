(function () {
  function key(row, i) {
    var c = row.cells[i];
    if (c.hasAttribute('data-v')) {
      var v = c.getAttribute('data-v');
      return v === '' ? null : parseFloat(v);
    }
    return c.textContent.trim().toLowerCase();
  }
  document.querySelectorAll('table.sortable thead th').forEach(function (th) {
    th.addEventListener('click', function () {
      var table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
      var asc = th.getAttribute('data-dir') !== 'asc';
      table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, i), y = key(b, i);
        if (x === null) return 1;
        if (y === null) return -1;
        var d = (typeof x === 'number') ? x - y : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  // Records whether every figure loaded (read by the report's browser test).
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; });
    var out = document.getElementById('image-check');
    out.setAttribute('data-loaded', ok.length);
    out.setAttribute('data-total', imgs.length);
    out.textContent = 'images loaded: ' + ok.length + ' of ' + imgs.length;
  });
  // Records how many summary tables are wider than the page, each measured with its "More
  // columns" open (read by the report's browser test).
  window.addEventListener('load', function () {
    var wraps = document.querySelectorAll('.table-wrap.summary'), wide = 0;
    wraps.forEach(function (w) {
      var d = w.closest('details'), shut = d && !d.open;
      if (shut) d.open = true;
      if (w.scrollWidth > w.clientWidth + 1) wide += 1;
      if (shut) d.open = false;
    });
    var out = document.getElementById('layout-check');
    out.setAttribute('data-tables', wraps.length);
    out.setAttribute('data-wide', wide);
    out.setAttribute('data-viewport', window.innerWidth);
  });
})();
