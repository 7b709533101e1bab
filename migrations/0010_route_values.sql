-- Values a route gives the bodies of its jobs (`/_switchyard/route/<name>`): what differs per
-- source at the same target, e.g. the customer each retailer is at the wholesaler.
ALTER TABLE routes ADD COLUMN route_values jsonb NOT NULL DEFAULT '{}'::jsonb;
