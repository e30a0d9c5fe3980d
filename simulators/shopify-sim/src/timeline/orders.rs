//! A person's orders and what follows them: payments, fulfilment, edits, refunds, cancels, deletes.

use super::*;

impl Gen<'_> {
    pub(super) fn place_order(&mut self, t: Ts, co: &Checkout, group: u64) {
        let cfg = self.cfg;
        let test = self.chance(cfg.test_order_fraction);
        let pending = !test && self.chance(cfg.pending_payment_fraction);
        let customer = self.snapshot(t);
        let email = co.email.clone().unwrap_or_default();
        let ship = co
            .shipping_address
            .clone()
            .unwrap_or_else(|| self.address("Guest", "Buyer", None));
        let mut o = Order {
            id: self.id(),
            checkout_id: co.id,
            checkout_token: co.token.clone(),
            cart_token: co.cart_token.clone(),
            token: self.hex_token(),
            customer,
            email,
            created_at: t,
            updated_at: t,
            closed_at: None,
            cancelled_at: None,
            cancel_reason: None,
            basket: co.basket.clone(),
            test,
            financial_status: if pending { "pending" } else { "paid" },
            fulfillment_status: None,
            fulfillments: Vec::new(),
            refunds: Vec::new(),
            buyer_accepts_marketing: co.buyer_accepts_marketing,
            gateway: if test {
                "bogus"
            } else if pending {
                "manual"
            } else {
                "shopify_payments"
            },
            confirmation_number: self.confirmation(),
            shipping_address: ship,
        };
        let total = o.basket.total();
        let idx = self.truth.orders.len();
        self.truth.orders.push(OrderTruth {
            id: o.id,
            processed_at: t,
            paid_at: None,
            test,
            cancelled: false,
            deleted: false,
            total_shop: total.shop,
            refunded_shop: 0,
            cancelled_at: None,
            deleted_at: None,
            refunds: Vec::new(),
        });
        if !test {
            self.orders_created.push(t);
        }
        self.emit(
            t,
            Topic::OrdersCreate,
            Subject::Order(Box::new(o.clone())),
            group,
        );

        let outcome = if test {
            Outcome::Keep
        } else {
            let r: f64 = self.rng.random();
            if r < cfg.cancellation_fraction {
                Outcome::Cancel
            } else if r < cfg.cancellation_fraction + cfg.refund_fraction {
                Outcome::FullRefund
            } else if r < cfg.cancellation_fraction
                + cfg.refund_fraction
                + cfg.partial_refund_fraction
            {
                Outcome::PartialRefund
            } else {
                Outcome::Keep
            }
        };
        let delete = matches!(outcome, Outcome::Keep | Outcome::Cancel)
            && self.chance(if test { 0.3 } else { cfg.order_delete_fraction });

        let paid_at = if pending {
            if outcome == Outcome::Cancel {
                // Never paid: voided.
                let at = t + self.hours(6, 48);
                if at < self.end {
                    o.financial_status = "voided";
                    o.cancelled_at = Some(at);
                    o.cancel_reason = Some("declined");
                    o.closed_at = Some(at);
                    o.updated_at = at;
                    let g = self.group();
                    self.emit_order_change(at, Topic::OrdersCancelled, &o, g);
                    if let Some(tr) = self.truth.orders.get_mut(idx) {
                        tr.cancelled = true;
                        tr.cancelled_at = Some(at);
                    }
                }
                self.maybe_delete(&o, idx, delete);
                return;
            }
            let at = t + self.hours(1, 24);
            if at >= self.end {
                return;
            }
            o.financial_status = "paid";
            o.updated_at = at;
            let g = self.group();
            self.emit_order_change(at, Topic::OrdersPaid, &o, g);
            (at, g)
        } else {
            self.emit_order_change(t, Topic::OrdersPaid, &o, group);
            (t, group)
        };
        let (paid_at, paid_group) = paid_at;
        if let Some(tr) = self.truth.orders.get_mut(idx) {
            tr.paid_at = Some(paid_at);
        }
        if !test {
            self.money.push((paid_at, total.shop));
        }
        // Shopify refreshes the customer (legacy orders_count/total_spent) after an order.
        self.touch_customer(paid_at);
        if let Some(snap) = self.snapshot(paid_at) {
            self.emit(
                paid_at,
                Topic::CustomersUpdate,
                Subject::Customer(snap),
                paid_group,
            );
        }

        match outcome {
            Outcome::Cancel => {
                let at = paid_at + self.hours(1, 48);
                if at < self.end {
                    let refund = self.refund(&o, at, true);
                    o.financial_status = "refunded";
                    o.cancelled_at = Some(at);
                    o.cancel_reason =
                        Some(["customer", "inventory", "fraud"][self.rng.random_range(0..3)]);
                    o.closed_at = Some(at);
                    o.updated_at = at;
                    o.refunds.push(refund.clone());
                    self.record_refund(idx, &refund);
                    if let Some(tr) = self.truth.orders.get_mut(idx) {
                        tr.cancelled = true;
                        tr.cancelled_at = Some(at);
                    }
                    let g = self.group();
                    self.emit(
                        at,
                        Topic::RefundsCreate,
                        Subject::Refund(Box::new(refund), Box::new(o.clone())),
                        g,
                    );
                    self.emit_order_change(at, Topic::OrdersCancelled, &o, g);
                }
            }
            Outcome::Keep | Outcome::FullRefund | Outcome::PartialRefund => {
                if !delete && self.chance(cfg.fulfillment_fraction) {
                    let at = paid_at + self.days(1, 4);
                    if at < self.end {
                        o.fulfillment_status = Some("fulfilled");
                        o.fulfillments.push(Fulfillment {
                            id: self.id(),
                            created_at: at,
                            tracking_number: format!("1Z{:016X}", self.rng.random::<u64>()),
                        });
                        o.closed_at = Some(at);
                        o.updated_at = at;
                        let g = self.group();
                        self.emit_order_change(at, Topic::OrdersFulfilled, &o, g);
                    }
                }
                if matches!(outcome, Outcome::FullRefund | Outcome::PartialRefund) {
                    let at = o.updated_at + self.days(3, 30);
                    let full = outcome == Outcome::FullRefund;
                    let refund = if full {
                        Some(self.refund(&o, at, false))
                    } else {
                        self.partial_refund(&o, at)
                    };
                    if let Some(refund) = refund.filter(|_| at < self.end) {
                        o.financial_status = if full {
                            "refunded"
                        } else {
                            "partially_refunded"
                        };
                        o.updated_at = at;
                        o.refunds.push(refund.clone());
                        self.record_refund(idx, &refund);
                        let g = self.group();
                        self.emit(
                            at,
                            Topic::RefundsCreate,
                            Subject::Refund(Box::new(refund), Box::new(o.clone())),
                            g,
                        );
                        self.emit(
                            at,
                            Topic::OrdersUpdated,
                            Subject::Order(Box::new(o.clone())),
                            g,
                        );
                    }
                }
            }
        }
        self.maybe_delete(&o, idx, delete);
    }

    fn maybe_delete(&mut self, o: &Order, idx: usize, delete: bool) {
        if !delete {
            return;
        }
        let at = o.created_at + self.days(4, 7);
        if at < self.end && at > o.updated_at {
            let g = self.group();
            self.emit(at, Topic::OrdersDelete, Subject::OrderDelete(o.id), g);
            if let Some(tr) = self.truth.orders.get_mut(idx) {
                tr.deleted = true;
                tr.deleted_at = Some(at);
            }
        }
    }

    fn record_refund(&mut self, idx: usize, refund: &Refund) {
        if let Some(tr) = self.truth.orders.get_mut(idx) {
            tr.refunded_shop += refund.amount.shop;
            tr.refunds.push((refund.created_at, refund.amount.shop));
            if !tr.test {
                self.money.push((refund.created_at, -refund.amount.shop));
            }
        }
    }

    fn confirmation(&mut self) -> String {
        const ALPHA: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        (0..9)
            .map(|_| char::from(ALPHA[self.rng.random_range(0..ALPHA.len())]))
            .collect()
    }

    /// Full refund of every line and the shipping (cancellation or return).
    fn refund(&mut self, o: &Order, at: Ts, cancel: bool) -> Refund {
        let lines: Vec<RefundLine> = o
            .basket
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.quantity, l.net(), l.tax))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|(i, quantity, subtotal, tax)| RefundLine {
                id: self.id(),
                line_index: i,
                quantity,
                subtotal,
                tax,
            })
            .collect();
        let shipping = (o.basket.shipping.shop > 0).then_some(o.basket.shipping);
        let amount = lines
            .iter()
            .fold(Amt::default(), |a, l| a.add(l.subtotal).add(l.tax))
            .add(shipping.unwrap_or_default());
        let transactions = self.transactions(o, at, amount);
        Refund {
            id: self.id(),
            order_id: o.id,
            created_at: at,
            note: Some(if cancel {
                "Order canceled"
            } else {
                "Returned: changed mind"
            }),
            restock: true,
            lines,
            shipping,
            transactions,
            amount,
        }
    }

    /// Part of one line, or (shop-currency orders with a single unit) a goodwill amount
    /// with no lines — refunds need not match their line subtotals.
    fn partial_refund(&mut self, o: &Order, at: Ts) -> Option<Refund> {
        let foreign = !o.basket.pres.code.is_empty();
        let single_unit =
            o.basket.lines.len() == 1 && o.basket.lines.iter().all(|l| l.quantity == 1);
        let (lines, amount, note) = if single_unit {
            if foreign {
                return None;
            }
            let total = o.basket.total().shop;
            let pct = self.rng.random_range(10..=50);
            let amt = round_div(total * pct, 100).max(1);
            (Vec::new(), Amt::new(amt, amt), "Goodwill: late delivery")
        } else {
            let i = self.rng.random_range(0..o.basket.lines.len());
            let l = o.basket.lines.get(i)?;
            let q = self.rng.random_range(1..=l.quantity);
            let (subtotal, tax) = if q == l.quantity {
                (l.net(), l.tax)
            } else {
                let qq = i64::from(q);
                let n = i64::from(l.quantity);
                let net = l.net();
                (
                    Amt::new(round_div(net.shop * qq, n), round_div(net.pres * qq, n)),
                    Amt::new(round_div(l.tax.shop * qq, n), round_div(l.tax.pres * qq, n)),
                )
            };
            let rl = RefundLine {
                id: self.id(),
                line_index: i,
                quantity: q,
                subtotal,
                tax,
            };
            (vec![rl], subtotal.add(tax), "Returned: damaged item")
        };
        let transactions = self.transactions(o, at, amount);
        Some(Refund {
            id: self.id(),
            order_id: o.id,
            created_at: at,
            note: Some(note),
            restock: !lines.is_empty(),
            lines,
            shipping: None,
            transactions,
            amount,
        })
    }

    /// Refund transactions summing (successful ones) to `amount` in the presentment
    /// currency: sometimes split in two, sometimes preceded by a failed attempt.
    fn transactions(&mut self, o: &Order, at: Ts, amount: Amt) -> Vec<Transaction> {
        let foreign = !o.basket.pres.code.is_empty();
        let currency = if foreign { o.basket.pres.code } else { "" };
        let value = if foreign { amount.pres } else { amount.shop };
        let parent_id = self.id();
        let mut out = Vec::new();
        if self.chance(0.1) {
            out.push(Transaction {
                id: self.id(),
                success: false,
                amount: value,
                currency,
                gateway: o.gateway,
                parent_id,
                created_at: at,
                test: o.test,
            });
        }
        let parts = if value >= 200 && self.chance(0.3) {
            let first = round_div(value * 8, 10);
            vec![first, value - first]
        } else {
            vec![value]
        };
        for part in parts {
            out.push(Transaction {
                id: self.id(),
                success: true,
                amount: part,
                currency,
                gateway: o.gateway,
                parent_id,
                created_at: at,
                test: o.test,
            });
        }
        out
    }
}
