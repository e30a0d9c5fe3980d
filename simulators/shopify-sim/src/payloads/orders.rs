//! Order and refund payloads, as the orders/* and refunds/create webhooks carry them.

use super::*;

fn refunded_qty(o: &Order, line_index: usize) -> u32 {
    o.refunds
        .iter()
        .flat_map(|r| r.lines.iter())
        .filter(|rl| rl.line_index == line_index)
        .map(|rl| rl.quantity)
        .sum()
}

fn order_line(ctx: &Ctx<'_>, o: &Order, i: usize, l: &Line) -> J {
    let b = &o.basket;
    let p = product(ctx, l.product);
    let current = l.quantity.saturating_sub(refunded_qty(o, i));
    let fulfilled = o.fulfillment_status == Some("fulfilled");
    obj! {
        "id" => l.id,
        "admin_graphql_api_id" => gid("LineItem", l.id),
        "attributed_staffs" => J::Arr(vec![]),
        "current_quantity" => u64::from(current),
        "fulfillable_quantity" => if fulfilled || o.cancelled_at.is_some() { 0u64 } else { u64::from(current) },
        "fulfillment_service" => "manual",
        "fulfillment_status" => if fulfilled { J::from("fulfilled") } else { J::Null },
        "gift_card" => false,
        "grams" => p.map_or(0u64, |p| u64::from(p.grams)),
        "name" => p.map(|p| format!("{} - {}", p.title, p.variant_title)),
        "price" => money(l.price.shop),
        "price_set" => set(ctx, b, l.price),
        "product_exists" => true,
        "product_id" => p.map(|p| p.id),
        "properties" => J::Arr(vec![]),
        "quantity" => u64::from(l.quantity),
        "requires_shipping" => true,
        "sku" => p.map(|p| p.sku.clone()),
        "taxable" => true,
        "title" => p.map(|p| p.title.as_str()),
        "total_discount" => money(l.discount.shop),
        "total_discount_set" => set(ctx, b, l.discount),
        "variant_id" => p.map(|p| p.variant_id),
        "variant_inventory_management" => "shopify",
        "variant_title" => p.map(|p| p.variant_title.as_str()),
        "vendor" => p.map(|p| p.vendor.as_str()),
        "tax_lines" => tax_lines(ctx, b, l.tax),
        "duties" => J::Arr(vec![]),
        "discount_allocations" => discount_allocations(ctx, b, l),
    }
}

pub(super) fn order_payload(ctx: &Ctx<'_>, o: &Order, legacy: bool) -> J {
    let b = &o.basket;
    let number = ctx.order_numbers.get(&o.id).copied().unwrap_or(0);
    let name = format!("#{number}");
    let refunded = o.refunded();
    let refunded_lines = o
        .refunds
        .iter()
        .flat_map(|r| r.lines.iter())
        .fold((Amt::default(), Amt::default()), |(s, t), rl| {
            (s.add(rl.subtotal), t.add(rl.tax))
        });
    let current_subtotal = b.subtotal().sub(refunded_lines.0);
    let current_tax = b.tax().sub(refunded_lines.1);
    let current_total = b.total().sub(refunded);
    let outstanding = if o.financial_status == "pending" {
        b.total().shop
    } else {
        0
    };
    let status_url = format!(
        "https://{}/{}/orders/{}/authenticate?key={}&locale=en-CA",
        ctx.shop_domain, ctx.shop_id, o.token, o.confirmation_number
    );
    let lines: Vec<J> = b
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| order_line(ctx, o, i, l))
        .collect();
    let fulfillments: Vec<J> = o
        .fulfillments
        .iter()
        .enumerate()
        .map(|(n, f)| {
            obj! {
                "id" => f.id,
                "admin_graphql_api_id" => gid("Fulfillment", f.id),
                "created_at" => ts(f.created_at),
                "location_id" => 905_684_977u64,
                "name" => format!("{name}.{}", n + 1),
                "order_id" => o.id,
                "origin_address" => obj!{},
                "receipt" => obj!{},
                "service" => "manual",
                "shipment_status" => J::Null,
                "status" => "success",
                "tracking_company" => "UPS",
                "tracking_number" => &f.tracking_number,
                "tracking_numbers" => J::Arr(vec![J::from(&f.tracking_number)]),
                "tracking_url" => format!("https://www.ups.com/WebTracking?loc=en_US&requester=ST&trackNums={}", f.tracking_number),
                "updated_at" => ts(f.created_at),
                "line_items" => J::Arr(b.lines.iter().enumerate().map(|(i, l)| order_line(ctx, o, i, l)).collect()),
            }
        })
        .collect();
    let refunds: Vec<J> = o
        .refunds
        .iter()
        .map(|r| refund_payload(ctx, r, o))
        .collect();
    let tags = if o.test { "test" } else { "" };
    let discount_apps = match b.discount_code {
        Some(code) => J::Arr(vec![obj! {
            "target_type" => "line_item",
            "type" => "discount_code",
            "value" => "10.0",
            "value_type" => "percentage",
            "allocation_method" => "across",
            "target_selection" => "all",
            "code" => code,
        }]),
        None => J::Arr(vec![]),
    };
    let mut f: Vec<(&'static str, J)> = vec![
        ("id", o.id.into()),
        ("admin_graphql_api_id", gid("Order", o.id).into()),
        ("app_id", J::U(580_111)),
        ("browser_ip", "203.0.113.24".into()),
        ("buyer_accepts_marketing", o.buyer_accepts_marketing.into()),
        ("cancel_reason", o.cancel_reason.into()),
        ("cancelled_at", ts_opt(o.cancelled_at)),
        ("cart_token", o.cart_token.as_str().into()),
        ("checkout_id", o.checkout_id.into()),
        ("checkout_token", o.checkout_token.as_str().into()),
        ("closed_at", ts_opt(o.closed_at)),
        ("confirmation_number", o.confirmation_number.as_str().into()),
        ("confirmed", true.into()),
        ("contact_email", o.email.as_str().into()),
        ("created_at", ts(o.created_at).into()),
        ("currency", ctx.currency.into()),
        (
            "current_subtotal_price",
            money(current_subtotal.shop).into(),
        ),
        ("current_subtotal_price_set", set(ctx, b, current_subtotal)),
        ("current_total_discounts", money(b.discounts().shop).into()),
        ("current_total_discounts_set", set(ctx, b, b.discounts())),
        ("current_total_duties_set", J::Null),
        ("current_total_price", money(current_total.shop).into()),
        ("current_total_price_set", set(ctx, b, current_total)),
        ("current_total_tax", money(current_tax.shop).into()),
        ("current_total_tax_set", set(ctx, b, current_tax)),
        ("customer_locale", "en-CA".into()),
        ("discount_codes", discount_codes(b)),
        ("email", o.email.as_str().into()),
        ("estimated_taxes", false.into()),
        ("financial_status", o.financial_status.into()),
        ("fulfillment_status", o.fulfillment_status.into()),
        (
            "landing_site",
            "/products/salt-pepper?ref=home&variant=1".into(),
        ),
        ("name", name.clone().into()),
        ("note", J::Null),
        ("note_attributes", J::Arr(vec![])),
        ("number", J::U(number.saturating_sub(1000))),
        ("order_number", J::U(number)),
        ("order_status_url", status_url.into()),
        ("payment_gateway_names", J::Arr(vec![o.gateway.into()])),
        ("phone", J::Null),
        ("presentment_currency", pres_code(ctx, b).into()),
        ("processed_at", ts(o.created_at).into()),
        ("reference", J::Null),
        ("referring_site", "https://www.google.com/".into()),
        ("source_name", "web".into()),
        ("subtotal_price", money(b.subtotal().shop).into()),
        ("subtotal_price_set", set(ctx, b, b.subtotal())),
        ("tags", tags.into()),
        ("tax_lines", tax_lines(ctx, b, b.tax())),
        ("taxes_included", false.into()),
        ("test", o.test.into()),
        ("token", o.token.as_str().into()),
        ("total_discounts", money(b.discounts().shop).into()),
        ("total_discounts_set", set(ctx, b, b.discounts())),
        (
            "total_line_items_price",
            money(b.line_items_total().shop).into(),
        ),
        (
            "total_line_items_price_set",
            set(ctx, b, b.line_items_total()),
        ),
        ("total_outstanding", money(outstanding).into()),
        ("total_price", money(b.total().shop).into()),
        ("total_price_set", set(ctx, b, b.total())),
        ("total_shipping_price_set", set(ctx, b, b.shipping)),
        ("total_tax", money(b.tax().shop).into()),
        ("total_tax_set", set(ctx, b, b.tax())),
        ("total_tip_received", "0.00".into()),
        ("total_weight", b.grams(ctx.catalogue).into()),
        ("updated_at", ts(o.updated_at).into()),
        ("user_id", J::Null),
        ("billing_address", order_address(&o.shipping_address)),
    ];
    if let Some(c) = &o.customer {
        f.push(("customer", customer_embedded(ctx, c, legacy)));
    }
    f.extend([
        ("discount_applications", discount_apps),
        ("fulfillments", J::Arr(fulfillments)),
        ("line_items", J::Arr(lines)),
        ("payment_terms", J::Null),
        ("refunds", J::Arr(refunds)),
        ("shipping_address", order_address(&o.shipping_address)),
        ("shipping_lines", shipping_lines(ctx, b, true)),
    ]);
    J::Obj(f)
}

pub(super) fn refund_payload(ctx: &Ctx<'_>, r: &Refund, o: &Order) -> J {
    let b = &o.basket;
    let txn_code = |c: &'static str| if c.is_empty() { ctx.currency } else { c };
    let transactions: Vec<J> = r
        .transactions
        .iter()
        .map(|t| {
            let code = txn_code(t.currency);
            obj! {
                "id" => t.id,
                "admin_graphql_api_id" => gid("OrderTransaction", t.id),
                "amount" => money(t.amount),
                "authorization" => J::Null,
                "created_at" => ts(t.created_at),
                "currency" => code,
                "device_id" => J::Null,
                "error_code" => if t.success { J::Null } else { J::from("card_declined") },
                "gateway" => t.gateway,
                "kind" => "refund",
                "location_id" => J::Null,
                "message" => if t.success { "Refund processed" } else { "Refund failed: card declined" },
                "order_id" => o.id,
                "parent_id" => t.parent_id,
                "payment_id" => format!("c{}.{}", o.checkout_id, t.id % 10),
                "processed_at" => ts(t.created_at),
                "receipt" => obj!{},
                "source_name" => "web",
                "status" => if t.success { "success" } else { "failure" },
                "test" => t.test,
                "user_id" => J::Null,
                "total_unsettled_set" => obj!{
                    "presentment_money" => obj!{"amount" => "0.0", "currency" => pres_code(ctx, b)},
                    "shop_money" => obj!{"amount" => "0.0", "currency" => ctx.currency},
                },
            }
        })
        .collect();
    let lines: Vec<J> = r
        .lines
        .iter()
        .map(|rl| {
            let line_item = b
                .lines
                .get(rl.line_index)
                .map_or(J::Null, |l| order_line(ctx, o, rl.line_index, l));
            let line_item_id = b.lines.get(rl.line_index).map_or(0, |l| l.id);
            obj! {
                "id" => rl.id,
                "line_item_id" => line_item_id,
                "location_id" => 905_684_977u64,
                "quantity" => u64::from(rl.quantity),
                "restock_type" => if r.restock { "return" } else { "no_restock" },
                "subtotal" => num(rl.subtotal.shop),
                "subtotal_set" => set(ctx, b, rl.subtotal),
                "total_tax" => num(rl.tax.shop),
                "total_tax_set" => set(ctx, b, rl.tax),
                "line_item" => line_item,
            }
        })
        .collect();
    let shipping: Vec<J> = r
        .shipping
        .iter()
        .map(|s| {
            obj! {
                "id" => r.id ^ 0x5a5a,
                "shipping_line_id" => J::U(271_878_346_596_884_015),
                "subtotal_amount_set" => set(ctx, b, *s),
                "tax_amount_set" => set(ctx, b, Amt::default()),
            }
        })
        .collect();
    obj! {
        "id" => r.id,
        "admin_graphql_api_id" => gid("Refund", r.id),
        "created_at" => ts(r.created_at),
        "note" => r.note,
        "order_id" => r.order_id,
        "processed_at" => ts(r.created_at),
        "restock" => r.restock,
        "total_duties_set" => set(ctx, b, Amt::default()),
        "user_id" => J::Null,
        "order_adjustments" => J::Arr(vec![]),
        "transactions" => transactions,
        "refund_line_items" => lines,
        "duties" => J::Arr(vec![]),
        "return" => J::Null,
        "refund_shipping_lines" => shipping,
    }
}
