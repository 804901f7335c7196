-- A student's answer to "Big spenders": totals per customer in a subquery, then names.
SELECT c.name, t.total
FROM customers c
JOIN (SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id) t ON t.customer_id = c.id
ORDER BY t.total DESC, c.name
