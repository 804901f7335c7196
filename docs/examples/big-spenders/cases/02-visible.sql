INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['FR','DE','SG','BR'])[1 + g % 4] FROM generate_series(1, 200) g;
INSERT INTO orders SELECT g, 1 + (g * 11) % 200, ((g * 37 + 11) % 1000) / 10.0 FROM generate_series(1, 800) g;
