// js/app.js
