INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['FR','DE','SG','BR'])[1 + g % 4] FROM generate_series(1, 20) g;
INSERT INTO orders SELECT g, 1 + (g * 7) % 20, ((g * 37 + 7) % 1000) / 10.0 FROM generate_series(1, 80) g;
