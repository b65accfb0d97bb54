// js/pages/task.js
