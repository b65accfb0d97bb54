// js/pages/queues.js
