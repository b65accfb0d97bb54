// js/pages/workers.js
