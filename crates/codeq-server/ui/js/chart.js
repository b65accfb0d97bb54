// js/chart.js
