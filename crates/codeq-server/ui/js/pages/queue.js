// js/pages/queue.js
