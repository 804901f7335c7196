INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['FR','DE','SG','BR'])[1 + g % 4] FROM generate_series(1, 400) g;
INSERT INTO orders SELECT g, 1 + (g * 13) % 400, ((g * 37 + 13) % 1000) / 10.0 FROM generate_series(1, 1600) g;
