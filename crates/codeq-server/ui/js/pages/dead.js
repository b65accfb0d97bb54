// js/pages/dead.js
