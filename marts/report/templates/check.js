(function () {
  var charts = document.querySelectorAll('svg.chart');
  var empty = [];
  for (var i = 0; i < charts.length; i++) {
    var svg = charts[i];
    var marks = svg.querySelectorAll('.mark').length;
    var box = svg.getBBox();
    svg.setAttribute('data-drawn-marks', String(marks));
    svg.setAttribute('data-drawn-size', Math.round(box.width) + 'x' + Math.round(box.height));
    if (!marks || !(box.width > 0) || !(box.height > 0)) { empty.push(svg.getAttribute('data-chart')); }
  }
  document.body.setAttribute('data-charts', String(charts.length));
  document.body.setAttribute('data-rendered', empty.length ? 'empty:' + empty.join(',') : 'ok');
})();
